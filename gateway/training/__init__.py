"""PyTorch training jobs under the site agent's checkpoint contract (``docs/site-agent.md``).

- :mod:`gateway.training.checkpointing`: a helper for a user's own training loop (a stop flag
  for SIGTERM, an atomic save and a load of the complete training state, the contract's paths).
  It imports only the standard library and torch, so it can be imported or copied as it is.
- :mod:`gateway.training.example_torch`: a real PyTorch example job that keeps the contract
  (``python -m gateway.training.example_torch``).

This package does not import torch itself: ``import gateway.training`` stays cheap.
"""
