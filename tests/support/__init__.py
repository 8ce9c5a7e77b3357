"""Helpers shared by the test layers: waiting on the wall clock, ``dr-gateway run`` as a
process with its settings, VEN stand-ins, the fleet's invariants, certificates, hostile XML and
reporting data."""
