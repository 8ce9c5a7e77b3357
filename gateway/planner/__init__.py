"""Policies: fleet snapshot in, decisions out. Pure code; the daemon feeds it."""
