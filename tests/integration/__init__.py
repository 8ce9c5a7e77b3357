"""Tests on real servers on loopback (simulated VTNs and site controllers, the dashboard), real
databases (SQLite and PostgreSQL), temporary files and the daemon's objects in-process."""
