"""Trace-driven evaluation of migration policies.

The inputs, one module per format (``docs/inputs.md``): ``input_sites`` (sites, TOML),
``input_traces`` (renewable traces, CSV), ``input_jobs`` (jobs, CSV), with the CSV rules they
share in ``input_csv``; ``workload`` generates synthetic jobs. ``engine`` replays a policy
over them, ``fluid`` computes the bounds, ``run`` compares the policies and ``figures`` draws
the results. The bundled scenarios live in ``data/traces/``, built by ``trace_build`` (the
``dr-gateway traces build`` command) from weather files through the PV chain of ``weather``.
"""
