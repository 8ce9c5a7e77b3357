"""The PyTorch example job (``python -m gateway.training.example_torch``) as real processes,
under the checkpoint contract of ``docs/site-agent.md``.

A run SIGTERMed mid-training and resumed (once, or twice) ends with the same ``model.bin``,
byte for byte, as a run never interrupted; ``--resumed-file`` appears once the checkpoint is
loaded, not before; an unusable checkpoint ends the job with exit code 2 and a message naming
the file. No case depends on how fast the machine trains: a job needed mid-training is held
at a step by its test-only ``--step-gate`` until the test creates the gate file.

Each process spends about 2 s starting (importing torch, and torch._dynamo, which torch's
optimisers import on their first construction); the training itself is a small fraction, so
the runs are short and narrow (:data:`STEPS`, :data:`WIDTH`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gateway.training.example_torch import METRICS_FILE, MODEL_FILE, read_model_file
from simulators.hang_guard import HANG_GUARD_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

JOB = [sys.executable, "-m", "gateway.training.example_torch"]
STEPS = 40
WIDTH = 16
FIRST_HOLD = 15
"""The step the first interruption holds (and checkpoints) at."""
SECOND_HOLD = 30
"""The step a resumed job is held at for a second interruption or a look at its files."""


def job_argv(out: Path, *more: str) -> list[str]:
    return [*JOB, "--steps", str(STEPS), "--width", str(WIDTH), "--out", str(out), *more]


@dataclass(frozen=True)
class Finished:
    """What a finished run left in its output directory ``out``."""

    out: Path
    model: bytes
    metrics: bytes

    @property
    def model_sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()


def finished(out: Path) -> Finished:
    return Finished(out, (out / MODEL_FILE).read_bytes(), (out / METRICS_FILE).read_bytes())


def run_to_end(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    return done


class Job:
    """A job process whose log (stderr) the test reads line by line."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.seen: list[str] = []

    def wait_for_line(self, phrase: str) -> str:
        """Read the log until a line contains ``phrase``; fail if the job ends first."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.seen.append(line)
            if phrase in line:
                return line
        raise AssertionError(f"the job ended without logging {phrase!r}: {''.join(self.seen)}")

    def end(self) -> tuple[int, str]:
        """Wait for the exit (a hang guard bounds it); the exit code and the rest of the log."""
        assert self.process.stderr is not None
        rest = self.process.stderr.read()
        self.process.stderr.close()
        return self.process.wait(timeout=HANG_GUARD_S), rest


@contextmanager
def job(argv: list[str]) -> Iterator[Job]:
    started = Job(argv)
    try:
        yield started
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()


@pytest.fixture(scope="module")
def reference_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Job]]:
    """The run never interrupted, started (its output directory and process)."""
    out = tmp_path_factory.mktemp("reference")
    with job(job_argv(out)) as started:
        yield out, started


@pytest.fixture(scope="module")
def reference(reference_started: tuple[Path, Job], first_checkpoint: Path) -> Finished:
    """The run never interrupted, finished; it runs while :func:`first_checkpoint` is made."""
    out, started = reference_started
    exit_code, log = started.end()
    assert exit_code == 0, log
    return finished(out)


@pytest.fixture(scope="module")
def first_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written on SIGTERM while the job is held at :data:`FIRST_HOLD`; its
    ``--checkpoint-gate`` holds the write until the test has seen that nothing is written."""
    directory = tmp_path_factory.mktemp("first")
    checkpoint, gate = directory / "state.pt", directory / "checkpoint-gate"
    held = ["--step-gate", str(directory / "step-gate"), "--hold-at-step", str(FIRST_HOLD)]
    argv = job_argv(directory / "out", *held, "--checkpoint", str(checkpoint))
    with job([*argv, "--checkpoint-gate", str(gate)]) as interrupted:
        interrupted.wait_for_line(f"holding at step {FIRST_HOLD}")
        interrupted.process.send_signal(signal.SIGTERM)
        interrupted.wait_for_line(f"SIGTERM: holding the checkpoint at step {FIRST_HOLD}")
        assert not checkpoint.exists()
        gate.touch()
        exit_code, log = interrupted.end()
    assert exit_code == 0, log
    assert f"checkpoint at step {FIRST_HOLD} written to {checkpoint}" in log
    assert not (directory / "out" / MODEL_FILE).exists(), "a checkpointed job has no results"
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-gate", "state.pt"]
    return checkpoint


def test_a_run_interrupted_once_ends_byte_for_byte_as_one_never_interrupted(
    tmp_path: Path, reference: Finished, first_checkpoint: Path
) -> None:
    resumed = run_to_end(job_argv(tmp_path, "--resume", str(first_checkpoint)))
    assert f"resumed from {first_checkpoint} at step {FIRST_HOLD} of {STEPS}" in resumed.stderr
    assert finished(tmp_path).model_sha256 == reference.model_sha256
    assert finished(tmp_path).metrics == reference.metrics
    tensors, meta = read_model_file(tmp_path / MODEL_FILE)
    assert meta["hyper"]["width"] == WIDTH and meta["hyper"]["steps"] == STEPS
    layers = ("0", "1", "4", "7")  # the Linear, LayerNorm, Linear, Linear of the Sequential
    assert list(tensors) == [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    assert tensors["0.weight"].shape == (WIDTH, 32)


def test_a_run_interrupted_twice_ends_byte_for_byte_as_one_never_interrupted(
    tmp_path: Path, reference: Finished, first_checkpoint: Path
) -> None:
    second = tmp_path / "second.pt"
    held = ["--step-gate", str(tmp_path / "gate"), "--hold-at-step", str(SECOND_HOLD)]
    argv = job_argv(tmp_path, "--resume", str(first_checkpoint), *held)
    with job([*argv, "--checkpoint", str(second)]) as interrupted:
        interrupted.wait_for_line(f"holding at step {SECOND_HOLD}")
        interrupted.process.send_signal(signal.SIGTERM)
        exit_code, log = interrupted.end()
    assert exit_code == 0, log
    assert f"checkpoint at step {SECOND_HOLD} written to {second}" in log
    run_to_end(job_argv(tmp_path, "--resume", str(second)))
    assert finished(tmp_path).model_sha256 == reference.model_sha256


def test_the_resumed_file_appears_once_the_checkpoint_is_loaded(
    tmp_path: Path, reference: Finished, first_checkpoint: Path
) -> None:
    resumed_file, resume_gate, step_gate = (tmp_path / n for n in ("resumed", "rg", "sg"))
    gates = ["--resume-gate", str(resume_gate), "--step-gate", str(step_gate)]
    argv = job_argv(tmp_path / "out", "--resume", str(first_checkpoint), *gates)
    with job([*argv, "--hold-at-step", str(SECOND_HOLD), "--resumed-file", str(resumed_file)]) as j:
        j.wait_for_line(f"holding the resume at step {FIRST_HOLD}")
        assert not resumed_file.exists(), "loaded but held before the confirmation"
        resume_gate.touch()
        j.wait_for_line(f"holding at step {SECOND_HOLD}")
        assert resumed_file.exists(), "confirmed while training, long before the end"
        assert not (tmp_path / "out" / MODEL_FILE).exists()
        step_gate.touch()
        exit_code, log = j.end()
    assert exit_code == 0, log
    assert resumed_file.read_bytes() == b""
    assert finished(tmp_path / "out").model_sha256 == reference.model_sha256


def test_a_sigterm_at_the_resume_gate_checkpoints_unconfirmed(
    tmp_path: Path, first_checkpoint: Path
) -> None:
    resumed_file, checkpoint = tmp_path / "resumed", tmp_path / "again.pt"
    argv = job_argv(tmp_path / "out", "--resume", str(first_checkpoint))
    gate = ["--resume-gate", str(tmp_path / "gate"), "--resumed-file", str(resumed_file)]
    with job([*argv, *gate, "--checkpoint", str(checkpoint)]) as held:
        held.wait_for_line(f"holding the resume at step {FIRST_HOLD}")
        held.process.send_signal(signal.SIGTERM)
        exit_code, log = held.end()
    assert exit_code == 0, log
    assert f"checkpoint at step {FIRST_HOLD} written to {checkpoint}" in log
    assert not resumed_file.exists()


def _unusable_checkpoints(directory: Path, good: Path) -> dict[str, tuple[Path, list[str]]]:
    """Checkpoints the job must refuse, by case: (file, extra arguments of the resumed run)."""
    truncated = directory / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain_weights = directory / "plain_weights.pt"
    torch.save({"0.weight": torch.zeros(WIDTH, 32)}, plain_weights)
    other_run = directory / "other_run.pt"
    shutil.copyfile(good, other_run)
    return {
        "truncated": (truncated, []),
        "plain weights": (plain_weights, []),
        "another seed's run": (other_run, ["--seed", "1"]),
    }


def test_an_unusable_checkpoint_exits_2_naming_the_file(
    tmp_path: Path, first_checkpoint: Path
) -> None:
    cases = _unusable_checkpoints(tmp_path, first_checkpoint)
    runs = {
        case: subprocess.Popen(
            job_argv(tmp_path / case, "--resume", str(path), *more),
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (path, more) in cases.items()
    }
    for case, process in runs.items():
        _, log = process.communicate(timeout=HANG_GUARD_S)
        assert process.returncode == 2, (case, log)
        assert f"cannot resume: {cases[case][0]}: " in log, (case, log)
        assert not (tmp_path / case / MODEL_FILE).exists()


def test_one_and_two_threads_differ_in_the_last_bits(tmp_path: Path, reference: Finished) -> None:
    """What was measured with torch 2.13 (CPU, x86-64): the models of 1 and 2 threads differ
    from the first step on (LayerNorm's weight and bias gradients are summed per thread),
    by rounding only. A job must be resumed with the ``--threads`` it started with."""
    run_to_end(job_argv(tmp_path, "--threads", "2"))
    two_threads = finished(tmp_path)
    assert two_threads.model_sha256 != reference.model_sha256
    one, _ = read_model_file(reference.out / MODEL_FILE)
    two, _ = read_model_file(tmp_path / MODEL_FILE)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4, msg=name)
    loss_one = json.loads(reference.metrics)["final_loss"]
    assert json.loads(two_threads.metrics)["final_loss"] == pytest.approx(loss_one, rel=1e-3)
