"""The evaluation's sites file (TOML): ``[[site]]`` tables as the daemon's, read into specs.

``docs/inputs.md`` documents the format with an example; every problem raises
:class:`~gateway.errors.InputError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from gateway.errors import InputError
from gateway.settings import parse_model, read_toml
from gateway.settings_base import KeyProblem
from gateway.settings_sites import SiteSettings


@dataclass(frozen=True)
class SiteSpec:
    """One site as the evaluation sees it.

    id: the site id; gpus_total: GPUs installed; it_power_max_kw: IT power cap [kW];
    pue: facility power / IT power [-]; wan_bandwidth_gbps: WAN bandwidth [Gbit/s].
    """

    id: str
    gpus_total: int
    it_power_max_kw: float
    pue: float
    wan_bandwidth_gbps: float


class _EvaluationSite(SiteSettings):
    """The daemon's ``[[site]]`` with its daemon-only keys made optional."""

    controller_url: AnyHttpUrl | None = None  # type: ignore[assignment]
    controller_token: Annotated[str, Field(min_length=8)] | None = None  # type: ignore[assignment]


class _SitesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Annotated[list[_EvaluationSite], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_ids(self) -> _SitesFile:
        ids = [s.id for s in self.site]
        for i, site_id in enumerate(ids):
            if ids.index(site_id) != i:
                raise KeyProblem(("site", i, "id"), f"duplicate site id {site_id!r}")
        return self


def load_sites(path: Path | str) -> tuple[SiteSpec, ...]:
    """Read a TOML file of ``[[site]]`` tables, in file order.

    Keys as in the daemon's ``[[site]]``: ``id``, ``gpus_total``, ``it_power_max_kw``,
    ``wan_bandwidth_gbps`` required, ``pue`` (default 1.2) optional, and the daemon-only
    ``controller_url``, ``controller_token``, ``vtn`` and ``resource_id`` accepted and
    ignored. Unknown keys, other top-level keys and duplicate ids are rejected.
    """
    data = read_toml(path, "sites file", InputError)
    parsed = parse_model(_SitesFile, data, str(path), "docs/inputs.md", InputError)
    return tuple(
        SiteSpec(
            id=s.id,
            gpus_total=s.gpus_total,
            it_power_max_kw=s.it_power_max_kw,
            pue=s.pue,
            wan_bandwidth_gbps=s.wan_bandwidth_gbps,
        )
        for s in parsed.site
    )
