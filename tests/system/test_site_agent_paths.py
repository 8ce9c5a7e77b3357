"""The shipped site agent configuration survives restarts with its relative ``data_dir``.

Issue 11, point 6: ``dr-gateway site-agent --config config/site-agent.example.toml`` run from
the repository's root, stopped and started again, must run its job on from its checkpoint.
The system test starts the real ``dr-gateway site-agent`` command on a copy of the repository's
layout (``config/`` with the example configuration, byte for byte but for an OS-assigned
listen port) and stops it with SIGINT and with SIGKILL; after each start the job continues
from the step its checkpoint holds, its files are where ``data_dir`` says (no nested copy of
the path below the job's directory) and it is never reported finished. Every wait is on a
condition (the agent's ``/v1/status``, its log, the job's files), never a fixed sleep.

The unit cases check the rules underneath: relative paths are relative to the configuration
file's directory, every path handed to a job is absolute, and a job that exits 0 without its
completion evidence (a checkpoint or its output) is not recorded finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.agent.config import load_agent_settings, parse_agent_settings
from gateway.agent.example_job import read_arrays
from gateway.agent.jobs import JobPaths, job_argv
from gateway.agent.state import load_state
from gateway.errors import ConfigError
from simulators.hang_guard import HANG_GUARD_S
from tests.support.waiting import wait_for
from tests.system.test_site_agent import JOB_ID, agent_data, job_table, running_agents

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = Path("config") / "site-agent.example.toml"
EXAMPLE_JOB_ID = "resnet-demo"
PORT_LINE = re.compile(r"(?m)^listen_port = 8470(?=\s)")
WAIT_S = HANG_GUARD_S
"""Longest wait for any condition of the system test [s]."""
TRAINED_S = 0.3
"""Training time the agent must have counted before the test stops it [s]."""


# ---- the real command on a copy of the repository's layout ------------------------------------


def copy_layout(root: Path) -> Path:
    """``root/config/site-agent.example.toml``: the shipped file with ``listen_port = 0``."""
    text = (ROOT / EXAMPLE_CONFIG).read_text()
    patched, count = PORT_LINE.subn("listen_port = 0", text)
    assert count == 1, "the example configuration no longer says listen_port = 8470"
    config = root / EXAMPLE_CONFIG
    config.parent.mkdir(parents=True)
    config.write_text(patched)
    return config


def dr_gateway() -> str:
    """The installed ``dr-gateway`` command next to this interpreter."""
    command = Path(sys.executable).parent / "dr-gateway"
    assert command.exists(), f"no {command}: run make .venv/.installed"
    return str(command)


@dataclass
class AgentRun:
    """One ``dr-gateway site-agent`` process; its stderr goes to ``log_path``."""

    process: asyncio.subprocess.Process
    log_path: Path
    url: str = ""
    data_dir: str = ""

    def log_text(self) -> str:
        return self.log_path.read_text()


async def start_agent(config: str, cwd: Path, log_path: Path) -> AgentRun:
    """Start ``dr-gateway site-agent --config CONFIG`` in ``cwd``; wait until it serves."""
    with log_path.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            dr_gateway(), "site-agent", "--config", config, cwd=cwd, stderr=stderr
        )
    run = AgentRun(process, log_path)

    def serving() -> re.Match[str] | None:
        assert process.returncode is None, f"the agent exited: {run.log_text()}"
        return re.search(r"serving at (http://\S+)", run.log_text())

    served = await wait_for(serving, lambda: f"the agent to serve: {run.log_text()}", HANG_GUARD_S)
    assert isinstance(served, re.Match)
    run.url = served.group(1)
    started = re.search(r"started with \d+ jobs \(data_dir (.+)\)$", run.log_text(), re.M)
    assert started is not None, run.log_text()
    run.data_dir = started.group(1)
    return run


async def stop_agent(run: AgentRun, signum: signal.Signals) -> int:
    """Send ``signum``; the exit code once the agent has exited."""
    run.process.send_signal(signum)
    return await asyncio.wait_for(run.process.wait(), WAIT_S)


@asynccontextmanager
async def agent_killed_on_failure(run: AgentRun) -> AsyncIterator[AgentRun]:
    """Kill the agent if the test fails while it runs (its jobs follow by their death
    signal)."""
    try:
        yield run
    finally:
        if run.process.returncode is None:
            run.process.kill()
            await run.process.wait()


async def job_status(http: aiohttp.ClientSession, run: AgentRun, token: str) -> Any:
    """The example job as ``GET /v1/status`` lists it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(run.url + "/v1/status", headers=headers) as response:
        assert response.status == 200
        [job] = (await response.json())["jobs"]
    return job


async def poll_until(
    http: aiohttp.ClientSession, run: AgentRun, token: str, condition: Callable[[Any], bool]
) -> Any:
    """Poll the job's status until ``condition`` holds; a job reported finished fails."""
    seen: list[Any] = []

    async def met() -> bool:
        job = await job_status(http, run, token)
        assert job["state"] != "finished", f"the job was reported finished: {job}"
        seen[:] = [job]
        return condition(job)

    await wait_for(met, lambda: f"condition not met; last status {seen[0]}", WAIT_S)
    return seen[0]


async def train_a_while(
    http: aiohttp.ClientSession, run: AgentRun, token: str, job_log: Path, logged: str
) -> None:
    """Once ``logged`` is in the job's log (it started or resumed training), wait until the
    agent has counted ``TRAINED_S`` more of its work."""
    await wait_for(lambda: logged in job_log.read_text(), f"{logged!r} in the job's log", WAIT_S)
    since = await poll_until(http, run, token, lambda job: job["state"] == "running")

    def trained(job: Any) -> bool:
        trained_gpu_h = since["work_remaining_gpu_h"] - job["work_remaining_gpu_h"]
        return job["state"] == "running" and trained_gpu_h * 3600 >= TRAINED_S * job["gpus"]

    await poll_until(http, run, token, trained)


def checkpoint_step(path: Path) -> int:
    return int(read_arrays(path)[1]["step"])


def resumed_steps(job_log: Path) -> list[int]:
    return [
        int(step) for step in re.findall(r"resumed from \S+ at step (\d+)", job_log.read_text())
    ]


def newest_checkpoint(data_dir: Path) -> Path:
    state = load_state(data_dir)
    assert state is not None
    job = state.jobs[EXAMPLE_JOB_ID]
    assert job.state == "running", f"the job is to run on, not {job.state}"
    assert job.checkpoint is not None
    return job.checkpoint.path


async def test_shipped_example_config_resumes_its_job_after_sigint_and_sigkill(
    tmp_path: Path,
) -> None:
    repository = tmp_path / "repository"
    config = copy_layout(repository)
    settings = load_agent_settings(config)
    data_dir = repository / "var" / "site-a"  # "../var/site-a" from config/
    assert settings.data_dir == data_dir
    paths = JobPaths.of(data_dir, EXAMPLE_JOB_ID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    token = settings.token

    async with aiohttp.ClientSession() as http:
        # 1. From the repository's root, as the README says; stopped with SIGINT (Ctrl-C).
        first = await start_agent(str(EXAMPLE_CONFIG), repository, tmp_path / "agent-1.log")
        async with agent_killed_on_failure(first):
            assert first.data_dir == str(data_dir), "the log names the absolute data_dir"
            await train_a_while(http, first, token, paths.log_path, "started at step 0")
            assert await stop_agent(first, signal.SIGINT) == 0
        checkpoint = newest_checkpoint(data_dir)
        assert checkpoint.parent == paths.checkpoints_dir
        step_1 = checkpoint_step(checkpoint)
        assert step_1 > 0

        # 2. Again, from another working directory: it runs on from that checkpoint.
        second = await start_agent(str(config), elsewhere, tmp_path / "agent-2.log")
        async with agent_killed_on_failure(second):
            await wait_for(lambda: resumed_steps(paths.log_path) == [step_1], "resumed", WAIT_S)
            await train_a_while(http, second, token, paths.log_path, f"at step {step_1} of")
            pgid = load_state_pgid(data_dir)
            # 3. SIGKILL: the job checkpoints on its death signal, the next start takes it over.
            assert await stop_agent(second, signal.SIGKILL) == -signal.SIGKILL
        await wait_for(lambda: not group_alive(pgid), "the orphaned job exited", WAIT_S)
        assert paths.pending_checkpoint.exists()
        step_2 = checkpoint_step(paths.pending_checkpoint)
        assert step_2 > step_1

        third = await start_agent(str(EXAMPLE_CONFIG), repository, tmp_path / "agent-3.log")
        async with agent_killed_on_failure(third):
            await wait_for(
                lambda: resumed_steps(paths.log_path) == [step_1, step_2], "resumed", WAIT_S
            )
            await poll_until(http, third, token, lambda job: job["state"] == "running")
            assert await stop_agent(third, signal.SIGINT) == 0
        step_3 = checkpoint_step(newest_checkpoint(data_dir))
        assert step_3 >= step_2

    job_log = paths.log_path.read_text()
    assert job_log.count("started at step 0") == 1, "the job never started again from zero"
    assert "finished" not in job_log
    assert not list(paths.root.rglob("var")), "a nested copy of data_dir below the job"
    assert sorted(p.name for p in elsewhere.iterdir()) == [], "nothing in the working directory"
    assert not (repository / "config" / "var").exists()
    assert sorted(p.name for p in paths.checkpoints_dir.iterdir()) == [f"checkpoint-{3:06d}.bin"], (
        "one checkpoint per stop, older ones deleted"
    )


def load_state_pgid(data_dir: Path) -> int:
    state = json.loads((data_dir / "agent-state.json").read_text())
    [job] = state["jobs"]
    return int(job["pgid"])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- the rules underneath ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("var/site-a", "config/var/site-a"),
        ("../var/site-a", "var/site-a"),
        ("./state/../data", "config/data"),
    ],
)
def test_relative_data_dir_is_relative_to_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    config = tmp_path / "config" / "agent.toml"
    config.parent.mkdir()
    text = (ROOT / EXAMPLE_CONFIG).read_text().replace('"../var/site-a"', json.dumps(written))
    config.write_text(text)
    monkeypatch.chdir("/")
    assert load_agent_settings(config).data_dir == tmp_path / expected
    monkeypatch.chdir(tmp_path / "config")
    assert load_agent_settings("agent.toml").data_dir == tmp_path / expected


def test_relative_tls_files_are_relative_to_the_config_files_directory(tmp_path: Path) -> None:
    config = tmp_path / "config" / "agent.toml"
    config.parent.mkdir()
    tls = '[tls]\ncert_path = "tls/site-a.pem"\nkey_path = "tls/site-a.key"\n'
    config.write_text((ROOT / EXAMPLE_CONFIG).read_text() + tls)
    with pytest.raises(ConfigError) as error:
        load_agent_settings(config)
    expected = tmp_path / "config" / "tls" / "site-a.pem"
    assert f"tls.cert_path: no such file: {expected} (relative to the configuration" in str(
        error.value
    )


def test_absolute_and_home_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = agent_data(tmp_path, "alpha")
    assert parse_agent_settings(data, "test").data_dir == tmp_path / "alpha"
    home = parse_agent_settings(data | {"data_dir": "~/site"}, "test", base_dir=Path("/x"))
    assert home.data_dir == tmp_path / "home" / "site"


def test_every_path_handed_to_a_job_is_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    paths = JobPaths.of(Path("relative/data"), "j1")
    assert paths.root == Path("/relative/data/jobs/j1")
    command = ["{output_dir}", "{checkpoint_path}", "{resumed_path}"]
    argv = job_argv(command, "j1", paths, Path("/abs/checkpoint.bin"))
    assert all(Path(argument).is_absolute() for argument in argv[:3] + argv[4:])


def test_a_relative_checkpoint_in_an_older_state_file_is_anchored_in_data_dir(
    tmp_path: Path,
) -> None:
    from gateway.agent.state import save_state
    from tests.system.test_site_agent import saved_state

    state = saved_state(tmp_path)
    job = state.jobs[JOB_ID]
    assert job.checkpoint is not None
    job.checkpoint = type(job.checkpoint)(
        Path("var/site-a/jobs/train-1/checkpoints/checkpoint-000003.bin"), 1234, "ab" * 32
    )
    save_state(state, tmp_path)
    loaded = load_state(tmp_path)
    assert loaded is not None
    anchored = loaded.jobs[JOB_ID].checkpoint
    assert anchored is not None
    assert anchored.path == tmp_path / "jobs" / JOB_ID / "checkpoints" / "checkpoint-000003.bin"


async def test_exit_0_without_a_checkpoint_or_output_is_a_failure_not_finished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reported bug's second half: the job wrote its checkpoint where the agent did not
    look and exited 0; the agent must not conclude that it finished. It restarts the job (rule
    5) and, once it gives up, says so as an error."""
    silent = job_table("silent", ["{python}", "-c", "pass"])
    settings = parse_agent_settings(
        agent_data(tmp_path, "alpha", [silent]) | {"max_restarts": 1}, "test"
    )
    async with running_agents(settings) as [alpha]:
        await wait_for(
            lambda: alpha.agent.job_state("silent") != "running", "given up", HANG_GUARD_S
        )
    state = load_state(settings.data_dir)
    assert state is not None and state.jobs["silent"].restarts == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert sum("exited 0 with neither a checkpoint" in e for e in errors) == 2, errors
    assert any("restarts used; now finished" in e for e in errors), errors


async def test_exit_0_with_its_output_is_finished(tmp_path: Path) -> None:
    writes = "import os, pathlib; pathlib.Path(os.environ['DR_AGENT_OUTPUT_DIR'], 'r').touch()"
    done = job_table("done", ["{python}", "-c", writes])
    settings = parse_agent_settings(agent_data(tmp_path, "alpha", [done]), "test")
    async with running_agents(settings) as [alpha]:
        await wait_for(
            lambda: alpha.agent.job_state("done") == "finished", "finished", HANG_GUARD_S
        )
        state = load_state(settings.data_dir)
        assert state is not None and state.jobs["done"].restarts == 0
