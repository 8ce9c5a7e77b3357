"""Trace-driven evaluation of migration policies.

``inputs`` reads and validates the three input formats (sites, renewable traces, jobs) and
generates synthetic workloads; ``docs/inputs.md`` documents the formats. The bundled
scenarios live in ``data/traces/`` (built by ``dr-gateway traces build``).
"""
