"""The invariant checks' probe for a simulated site (``gateway/migration/invariants.py``).

:class:`SimulatorProbe` reads a :class:`~simulators.site_controller.SimulatedSite` in-process:
it consumes no injected fault and still sees a site whose server is stopped, so the demo and
the fault tests can check the fleet's invariants at any instant.
"""

from __future__ import annotations

from gateway.migration.invariants import SiteView
from gateway.sites.records import Checkpoint
from simulators.site_controller import SimulatedSite


class SimulatorProbe:
    """Reads a :class:`SimulatedSite` in-process (a ``gateway.migration.invariants.SiteProbe``)."""

    def __init__(self, site: SimulatedSite) -> None:
        self._site = site

    @property
    def site_id(self) -> str:
        return self._site.site_id

    async def view(self) -> SiteView:
        return SiteView.of(self._site.status())

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        op = self._site.operations.get((migration_id, "checkpoint"))
        return op.checkpoint if op is not None and op.state == "done" else None
