"""Simulated parts of the world around the gateway: renewable traces and site controllers.

The evaluator, the demo and the integration tests use them in place of real plants and
real site controllers; the gateway never imports them. Also the test-side tools that the tests
and the benchmarks share (the tests import them, the benchmarks never import the tests): real
agents on loopback, a seeded dashboard database, the OpenAPI contract checker, the HTTP fuzzer
and the hang guard.
"""
