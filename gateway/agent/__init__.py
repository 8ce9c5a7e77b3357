"""``dr-gateway site-agent``: a site controller that runs training jobs as OS processes.

It answers the site controller API (``docs/site-api.md``) like the simulator, moves jobs between
sites under the checkpoint contract of ``docs/site-agent.md`` and streams checkpoints to other
agents (:mod:`gateway.agent.transfer`).
"""
