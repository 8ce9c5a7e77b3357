"""The site agent's settings, read from TOML and validated at start (``docs/site-agent.md``).

Like the gateway's settings: unknown keys are rejected and a bad value raises
:class:`~gateway.errors.ConfigError` whose message names the file, the key and what is expected.

Every path is made absolute while the settings are validated: a relative path is relative to
the directory of the configuration file (:func:`load_agent_settings`), so that the agent finds
the same files whatever its working directory (a service manager starts it in ``/``). Nothing
the agent hands to a job, whose working directory is its own directory under ``data_dir``,
can then be resolved a second time.
"""

from __future__ import annotations

import os
import ssl
import string
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.agent.slurm.settings import SlurmSettings
from gateway.errors import ConfigError
from gateway.settings import parse_model, read_toml
from gateway.settings_base import COUNT_MAX, QUANTITY_MAX, KeyProblem
from gateway.sites.fields import ID_PATTERN
from gateway.sites.tls import (
    TlsFileError,
    check_tls_files,
    client_context,
    readable_file_problem,
    server_context,
)
from gateway.startup import listen_problem, writable_dir_problem

KEYS_DOC = "docs/site-agent.md"
BASE_DIR_CONTEXT = "base_dir"
"""The key of the validation context that holds the directory relative paths start from."""

COMMAND_PLACEHOLDERS = ("python", "job_id", "output_dir", "checkpoint_path", "resumed_path")
"""What ``{...}`` may name in a job's command: the agent's Python interpreter, the job's id, its
output directory at this site, the file its checkpoint must be written to, and the file it
creates once it has loaded a checkpoint (a command that names ``{resumed_path}`` promises to:
a restore then completes only when the file exists, see ``docs/site-agent.md``)."""

SiteId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
JobId = Annotated[str, Field(pattern=ID_PATTERN.pattern)]
Token = Annotated[str, Field(min_length=8)]
PositiveFloat = Annotated[float, Field(gt=0, le=QUANTITY_MAX)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=QUANTITY_MAX)]
Count = Annotated[int, Field(ge=1, le=COUNT_MAX)]
FORECAST_STEPS_MAX = 10_000
"""The most steps the renewable forecast of a status may have (horizon / step)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def absolute_path(path: Path, base_dir: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against ``base_dir`` (itself absolute) and
    normalised (``..`` removed; symbolic links are kept)."""
    return Path(os.path.normpath(base_dir / path.expanduser()))


def _base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths start from: the context's, else the working directory."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get(BASE_DIR_CONTEXT)
    return Path(base) if base is not None else Path.cwd()


def command_problem(command: tuple[str, ...]) -> tuple[int, str] | None:
    """(index, problem) of the first argument with an unknown or malformed placeholder."""
    for i, argument in enumerate(command):
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(argument) if name]
        except ValueError as exc:
            return i, f"{exc} in {argument!r} (write a literal brace as {{{{ or }}}})"
        for name in fields:
            if name not in COMMAND_PLACEHOLDERS:
                known = ", ".join(f"{{{p}}}" for p in COMMAND_PLACEHOLDERS)
                return i, f"unknown placeholder {{{name}}} in {argument!r}; known: {known}"
    return None


class RenewableSettings(_Section):
    """The site's renewable plant as the agent reports it: a constant power."""

    constant_kw: NonNegativeFloat = 0.0
    """Renewable power now and in every step of the forecast [kW]."""
    forecast_step_s: PositiveFloat = 900.0
    """Spacing of ``renewable_forecast_kw`` in the status [s]."""
    forecast_horizon_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 86400.0
    """How far the forecast reaches, at most a week [s]."""

    @model_validator(mode="after")
    def _bounded_forecast(self) -> RenewableSettings:
        steps = self.forecast_horizon_s / self.forecast_step_s
        if steps > FORECAST_STEPS_MAX:
            raise KeyProblem(
                ("forecast_step_s",),
                f"{self.forecast_step_s:g} s makes {steps:.0f} steps in forecast_horizon_s = "
                f"{self.forecast_horizon_s:g} s; at most {FORECAST_STEPS_MAX} are allowed",
            )
        return self


class TlsSettings(_Section):
    """``[tls]``: the agent serves HTTPS and, with ``ca_path``, requires mutual TLS."""

    cert_path: Path
    """The agent's PEM certificate (its chain may follow): served as the server certificate
    and presented as the client certificate when it calls other agents. It must name the host
    that the gateway's ``controller_url`` and the other agents use (a DNS name or an IP
    address). Relative paths are relative to the configuration file's directory."""
    key_path: Path
    """The unencrypted PEM private key of ``cert_path``."""
    ca_path: Path | None = None
    """The PEM CA certificate(s) that sign the fleet's certificates: other agents' server
    certificates must chain to it and, with ``require_client_cert``, every client's; without
    it other agents are verified against the system's trust store."""
    require_client_cert: bool | None = None
    """Refuse, at the handshake, every client without a certificate that chains to
    ``ca_path`` (mutual TLS); default: true when ``ca_path`` is given."""

    @field_validator("cert_path", "key_path", "ca_path")
    @classmethod
    def _readable(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        resolved = absolute_path(path, _base_dir(info))
        if (problem := readable_file_problem(resolved)) is not None:
            if resolved != path:
                problem += f": {resolved} (relative to the configuration file's directory)"
            raise ValueError(problem)
        return resolved

    @model_validator(mode="after")
    def _usable(self) -> TlsSettings:
        ca = None if self.ca_path is None else ("ca_path", self.ca_path)
        try:
            check_tls_files(("cert_path", self.cert_path), ("key_path", self.key_path), ca)
        except TlsFileError as exc:
            raise KeyProblem((exc.key,), exc.message) from exc
        if self.require_client_cert and self.ca_path is None:
            raise KeyProblem(
                ("require_client_cert",),
                "needs ca_path: the CA that clients' certificates must chain to",
            )
        return self

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate (mutual TLS)."""
        if self.require_client_cert is None:
            return self.ca_path is not None
        return self.require_client_cert

    def server_context(self) -> ssl.SSLContext:
        """The context the agent serves HTTPS with; ConfigError when a file went bad."""
        return server_context(self.cert_path, self.key_path, self.ca_path, self.mutual)

    def client_context(self) -> ssl.SSLContext:
        """The context of the agent's calls to other agents; ConfigError as above."""
        return client_context(self.ca_path, self.cert_path, self.key_path)


class JobSettings(_Section):
    """A ``[[job]]`` the agent starts when it starts (unless it already knows the job)."""

    id: JobId
    gpus: Count
    power_kw: NonNegativeFloat
    """IT draw while running [kW]."""
    checkpoint_gb: PositiveFloat
    """Expected checkpoint size, for the gateway's planning [GB]."""
    work_gpu_h: NonNegativeFloat
    """Expected work of the whole job [GPU h]; counts down while it runs."""
    migratable: bool = True
    flex_tier: Annotated[int, Field(ge=0, le=COUNT_MAX)] = 1
    command: tuple[str, ...] = Field(min_length=1)
    """The program and its arguments, with placeholders ``{python}``, ``{job_id}``,
    ``{output_dir}`` and ``{checkpoint_path}``; ``--resume PATH`` is appended on a restart."""

    @field_validator("command")
    @classmethod
    def _placeholders(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        problem = command_problem(command)
        if problem is not None:
            raise KeyProblem((problem[0],), problem[1])
        if not command[0]:
            raise KeyProblem((0,), "the program must not be empty")
        return command


class AgentSettings(_Section):
    site_id: SiteId
    """The id the gateway knows this site by (its ``[[site]] id``)."""
    token: Token
    """The bearer token every request must carry (the gateway's ``controller_token``)."""
    gpus_total: Count | None = None
    """GPUs of the site; required, except with ``[slurm]``, whose nodes tell."""
    it_power_max_kw: PositiveFloat
    """IT power cap: reservations and resumes must keep the committed power within it [kW]."""
    idle_kw_per_gpu: NonNegativeFloat = 0.11
    """Draw of a GPU without a running job [kW]."""
    wan_bandwidth_gbps: PositiveFloat
    """The site's WAN link [Gbit/s]."""
    throttle_transfers: bool = True
    """Send checkpoints no faster than the transfer call's ``bandwidth_gbps`` (at most
    ``wan_bandwidth_gbps``), so that transfer times match the feasibility model."""
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Usable share of the bandwidth, for the expected transfer time [-]."""
    checkpoint_write_gb_per_s: PositiveFloat = 0.6
    """Expected checkpoint write rate, for the expected checkpoint time [GB/s]."""
    restore_gb_per_s: PositiveFloat = 1.5
    """Expected checkpoint load rate, for the expected restore time [GB/s]."""
    listen_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    """Address ``dr-gateway site-agent`` serves on; ``0.0.0.0`` for every interface."""
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8470
    """Port it serves on; 0 lets the system choose one (the agent logs its URL)."""
    data_dir: Path
    """The agent's own directory: its state, the jobs' checkpoints, outputs and logs, and the
    checkpoints other agents send. Absolute once validated: a relative path is relative to the
    configuration file's directory."""
    checkpoint_timeout_s: PositiveFloat = 600.0
    """Longest a job may take from SIGTERM to its exit; then it is killed [s]."""
    stop_timeout_s: PositiveFloat = 30.0
    """When the agent stops: longest wait for its jobs to checkpoint and exit [s]."""
    resume_timeout_s: PositiveFloat = 600.0
    """Longest a restored job whose command names ``{resumed_path}`` may take to confirm that it
    loaded its checkpoint; then the restore fails and the job is stopped [s]."""
    max_restarts: Annotated[int, Field(ge=0, le=COUNT_MAX)] = 3
    """Restarts of a job that exits on its own with an error, before the agent gives up."""
    peer_tokens: dict[SiteId, Token] = {}
    """Bearer tokens of other sites' agents, for transfer calls without ``target_token``."""
    tls: TlsSettings | None = None
    """HTTPS and mutual TLS; without it the agent serves plain HTTP."""
    renewable: RenewableSettings = RenewableSettings()
    slurm: SlurmSettings | None = None
    """Run the jobs as Slurm batch jobs on this cluster (``docs/slurm.md``); without it the
    agent runs them as processes of its own machine."""
    job: list[JobSettings] = []

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, path: Path, info: ValidationInfo) -> Path:
        return absolute_path(path, _base_dir(info))

    @field_validator("slurm")
    @classmethod
    def _absolute_slurm_paths(
        cls, slurm: SlurmSettings | None, info: ValidationInfo
    ) -> SlurmSettings | None:
        if slurm is None:
            return None
        base = _base_dir(info)
        conf = None if slurm.conf_path is None else absolute_path(slurm.conf_path, base)
        bin_dir = None if slurm.bin_dir is None else absolute_path(slurm.bin_dir, base)
        return slurm.model_copy(update={"conf_path": conf, "bin_dir": bin_dir})

    @model_validator(mode="after")
    def _gpus_known(self) -> AgentSettings:
        if self.slurm is None and self.gpus_total is None:
            raise KeyProblem(("gpus_total",), "required key is missing (or give [slurm])")
        if self.slurm is not None and self.gpus_total is not None:
            raise KeyProblem(
                ("gpus_total",), "with [slurm] the GPUs are the cluster's (sinfo): remove it"
            )
        return self

    @model_validator(mode="after")
    def _jobs_fit(self) -> AgentSettings:
        ids = [job.id for job in self.job]
        gpus = 0
        for i, job in enumerate(self.job):
            if ids.index(job.id) != i:
                raise KeyProblem(("job", i, "id"), f"duplicate job id {job.id!r}")
            gpus += job.gpus
            if self.gpus_total is not None and gpus > self.gpus_total:
                raise KeyProblem(
                    ("job", i, "gpus"),
                    f"the jobs up to this one need {gpus} GPUs; gpus_total is {self.gpus_total}",
                )
        return self

    def peer_ssl(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl`` for calls to other agents (manifests, checkpoints): the ``[tls]``
        client context, or True (https:// peers verified against the system's trust store).
        ConfigError when a file went bad since validation."""
        return True if self.tls is None else self.tls.client_context()


def parse_agent_settings(
    data: dict[str, Any], source: str, base_dir: Path | None = None
) -> AgentSettings:
    """Validate a settings mapping; ``source`` names where it came from for messages.

    Relative paths (``data_dir``, the ``[tls]`` files) are made absolute against ``base_dir``
    (default: the working directory now)."""
    base = (base_dir or Path.cwd()).absolute()
    context = {BASE_DIR_CONTEXT: base}
    return parse_model(AgentSettings, data, source, keys_doc=KEYS_DOC, context=context)


def load_agent_settings(path: str | Path) -> AgentSettings:
    """Read and validate the agent's TOML settings file; relative paths in it are relative to
    its directory."""
    data = read_toml(path, "agent configuration")
    return parse_agent_settings(data, str(path), base_dir=Path(path).absolute().parent)


def check_agent_start(settings: AgentSettings, source: str | Path, *, bind: bool) -> None:
    """What ``dr-gateway site-agent`` needs beyond valid keys: ``listen_host`` resolves (and
    with ``bind`` the port is free now) and ``data_dir`` is, or can become, a directory the
    agent writes in. ConfigError naming the file and the key."""
    problem = listen_problem(settings.listen_host, settings.listen_port, bind=bind)
    if problem is not None:
        raise ConfigError(f"{source}: listen_{problem[0]}: {problem[1]}")
    if (dir_problem := writable_dir_problem(settings.data_dir)) is not None:
        raise ConfigError(f"{source}: data_dir: {dir_problem}")
