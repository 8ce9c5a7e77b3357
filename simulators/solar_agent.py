"""A real site agent whose renewable power follows the sun of a trace.

The site agent (:class:`gateway.agent.controller.SiteAgent`) reports a constant renewable power
(``[renewable] constant_kw``). :class:`SolarAgent` is that agent, unchanged in everything it
does with jobs, reservations and checkpoints, except that ``GET /v1/status`` reports the power
and the forecast of a :class:`~simulators.traces.RenewableTrace` at the agent's clock: the sun
is the only simulated part of a ``dr-gateway demo --slurm`` site.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.server import build_app
from gateway.clock import Clock
from gateway.http_edge import SERVER_OPTIONS
from gateway.sites.records import SiteStatus
from simulators.traces import RenewableTrace


class SolarAgent(SiteAgent):
    """A :class:`SiteAgent` whose status carries ``trace``'s power now and its (perfect)
    forecast, with the ``[renewable]`` step and horizon of its settings."""

    def __init__(self, settings: AgentSettings, clock: Clock, trace: RenewableTrace) -> None:
        super().__init__(settings, clock)
        self.trace = trace

    def status(self) -> SiteStatus:
        status = super().status()
        renewable = self.settings.renewable
        forecast = self.trace.forecast_kw(
            status.at, renewable.forecast_step_s, renewable.forecast_horizon_s
        )
        return replace(
            status,
            renewable_kw=self.trace.kw_at(status.at),
            renewable_forecast_kw=tuple(forecast),
        )


async def start_solar_agent(
    settings: AgentSettings, clock: Clock, trace: RenewableTrace
) -> tuple[web.AppRunner, str, SolarAgent]:
    """Start a :class:`SolarAgent` on an OS-assigned loopback port (plain HTTP); the runner
    (``await runner.cleanup()`` stops the server and the agent), its base URL and the agent."""
    agent = SolarAgent(settings, clock, trace)
    runner = web.AppRunner(build_app(agent), access_log=None, **SERVER_OPTIONS)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}", agent
