"""The gateway's side of the site controller API (``docs/site-api.md``).

``schema`` turns controller JSON into typed records; ``client`` talks to one controller.
"""
