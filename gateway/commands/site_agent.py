"""``dr-gateway site-agent``: a site agent until SIGINT or SIGTERM, or ``--check`` of its
configuration (``docs/site-agent.md``)."""

from __future__ import annotations

import argparse
import asyncio

from gateway.agent.config import check_agent_start, load_agent_settings


def run(args: argparse.Namespace) -> int:
    """Run ``dr-gateway site-agent`` as parsed into ``args``; the exit code."""
    settings = load_agent_settings(args.config)
    check_agent_start(settings, args.config, bind=not args.check)
    if args.check:
        print(f"{args.config}: the site agent's configuration is valid")
        return 0
    from gateway.agent.server import serve_until_signalled  # the server only when it serves

    return asyncio.run(serve_until_signalled(settings))
