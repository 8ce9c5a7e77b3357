"""Simulated parts of the world around the gateway: renewable traces and site controllers.

The evaluator, the demo and the integration tests use them in place of real plants and
real site controllers; the gateway never imports them.
"""
