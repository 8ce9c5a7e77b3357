"""Demand-response gateway for renewable-powered micro-datacenters."""

__version__ = "0.1.0"
