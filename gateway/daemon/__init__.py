"""The gateway daemon (``dr-gateway run``): one asyncio process that wires every layer
together.

- :mod:`gateway.daemon.gateway`: :class:`~gateway.daemon.gateway.Gateway`, its life cycle
  (start, schedule, stop) and its rounds (poll, plan, advance migrations, availability);
- :mod:`gateway.daemon.wiring`: what start-up builds from the settings (the worker threads,
  the site-controller clients, the dispatcher's step limits, the scheduler of the rounds);
- :mod:`gateway.daemon.decisions`: what the daemon decides in worker threads, each on one look
  at the fleet (the snapshot a plan is made on, the answers to events, the opts a plan changes).
"""
