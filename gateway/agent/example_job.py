"""The example training job of the site agent's checkpoint contract (``docs/site-agent.md``).

    python -m gateway.agent.example_job --steps N --out DIR [--resume CHECKPOINT]
        [--checkpoint PATH] [--seed S] [--width W] [--step-sleep-s S]
        [--resumed-file PATH] [--load-delay-s S]
        [--step-gate PATH [--hold-at-step K]] [--checkpoint-gate PATH] [--resume-gate PATH]

A two-layer perceptron (tanh hidden layer, ``--width`` units) learns a synthetic regression task
by minibatch SGD with momentum. The data set is drawn from a generator seeded with ``--seed``;
the minibatches are drawn from a second generator whose state is part of the training state.

- On SIGTERM (or SIGINT) the job finishes the step it is in, writes its complete state (weights,
  momentum, the minibatch generator's state, the step) atomically to ``--checkpoint`` (default:
  ``$DR_AGENT_CHECKPOINT_PATH``, else ``DIR/checkpoint.bin``) and exits 0.
- Given ``--resume CHECKPOINT`` it continues from that state: the final model is the same, bit
  for bit, as that of a run that was never interrupted. With ``--resumed-file PATH`` it creates
  that file once the checkpoint is loaded (after ``--load-delay-s``, which stands for the time a
  large model takes to load): the agent's restore completes only then.
- After ``--steps`` steps it writes the final model to ``DIR/model.bin`` (atomically) and exits 0.

Gates, for tests only (each is off unless its option is given; a real job has none): a test
holds the job in a named state for as long as it needs, injects its fault there, then lets
the job go on by creating the gate file. The job logs one line when it starts to wait at a
gate; while it waits it polls for the file every 10 ms.

- ``--step-gate PATH``: after ``--hold-at-step K`` steps (default: all but the last) the job
  waits until PATH exists ("holding at step K until PATH exists"). It is running, mid-training,
  for as long as the test likes. A SIGTERM meanwhile checkpoints at once (at step K); a job
  resumed from step K waits there again.
- ``--checkpoint-gate PATH``: on SIGTERM the job waits until PATH exists before it writes the
  checkpoint ("SIGTERM: holding the checkpoint at step K until PATH exists"): the agent's
  checkpoint operation stays in progress.
- ``--resume-gate PATH``: after loading a ``--resume`` checkpoint (and ``--load-delay-s``) the
  job waits until PATH exists before it confirms the resume ("holding the resume at step K
  until PATH exists"): the agent's restore stays in progress. A SIGTERM meanwhile ends the
  wait unconfirmed and checkpoints.

Exit codes: 0 finished or checkpointed, 2 bad arguments or an unusable checkpoint.

The files hold named arrays in a format of their own, chosen so that equal states give equal
bytes: a magic line, a JSON header (names and metadata) and each array in ``.npy`` format, never
pickled. :func:`read_arrays` reads them back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from gateway.training.gates import add_gate_arguments, check_hold_at_step, hold, number

log = logging.getLogger("gateway.agent.example_job")

CHECKPOINT_ENV = "DR_AGENT_CHECKPOINT_PATH"
"""Where the agent wants the checkpoint written (the default of ``--checkpoint``)."""
MODEL_FILE = "model.bin"
"""The final model's file name inside ``--out``."""

_MAGIC = b"DRGW-ARRAYS 1\n"
_HEADER_LENGTH = struct.Struct("<Q")
_PARAMETERS = ("w1", "b1", "w2", "b2")
_EXIT_BAD_INPUT = 2

FloatArray = npt.NDArray[np.float64]


class CheckpointFileError(Exception):
    """A checkpoint or model file that cannot be read or does not fit this job."""


@dataclass(frozen=True)
class Hyper:
    """The problem and the optimiser; a checkpoint only resumes a run of the same ones."""

    seed: int
    width: int
    features: int = 32
    samples: int = 4096
    batch: int = 64
    learning_rate: float = 0.01
    momentum: float = 0.9

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "width": self.width,
            "features": self.features,
            "samples": self.samples,
            "batch": self.batch,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
        }


# ---- files -------------------------------------------------------------------------------


def _write_arrays_to(stream: BinaryIO, arrays: Mapping[str, FloatArray], meta: object) -> None:
    header = json.dumps({"names": list(arrays), "meta": meta}, sort_keys=True).encode()
    stream.write(_MAGIC)
    stream.write(_HEADER_LENGTH.pack(len(header)))
    stream.write(header)
    for array in arrays.values():
        np.lib.format.write_array(stream, np.ascontiguousarray(array), allow_pickle=False)


def write_arrays_atomically(path: Path, arrays: Mapping[str, FloatArray], meta: object) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` so that ``path`` is either absent, the old
    file or the whole new one: a temporary file in the same directory, fsync, rename, fsync of
    the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as stream:
            _write_arrays_to(stream, arrays, meta)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_arrays(path: Path) -> tuple[dict[str, FloatArray], Any]:
    """The arrays and metadata of a file written by :func:`write_arrays_atomically`."""
    try:
        with path.open("rb") as stream:
            if stream.read(len(_MAGIC)) != _MAGIC:
                raise CheckpointFileError(f"{path}: not a checkpoint of this job (bad magic)")
            (length,) = _HEADER_LENGTH.unpack(stream.read(_HEADER_LENGTH.size))
            header = json.loads(stream.read(length))
            arrays = {
                name: np.lib.format.read_array(stream, allow_pickle=False)
                for name in header["names"]
            }
    except OSError as exc:
        raise CheckpointFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except (ValueError, KeyError, struct.error) as exc:
        raise CheckpointFileError(f"{path}: damaged file: {exc}") from exc
    return arrays, header["meta"]


# ---- the model -----------------------------------------------------------------------------


def make_data(hyper: Hyper) -> tuple[FloatArray, FloatArray]:
    """The synthetic data set: inputs and targets of a smooth non-linear function."""
    rng = np.random.default_rng(hyper.seed)
    inputs = rng.standard_normal((hyper.samples, hyper.features))
    direction = rng.standard_normal((hyper.features, 4)) / np.sqrt(hyper.features)
    targets = np.sin(inputs @ direction).sum(axis=1, keepdims=True)
    targets += 0.05 * rng.standard_normal(targets.shape)
    return inputs, targets


def initial_state(hyper: Hyper) -> dict[str, FloatArray]:
    """Weights (scaled Gaussian, from the seed) and zero momentum."""
    rng = np.random.default_rng([hyper.seed, 1])
    weights = {
        "w1": rng.standard_normal((hyper.features, hyper.width)) / np.sqrt(hyper.features),
        "b1": np.zeros(hyper.width),
        "w2": rng.standard_normal((hyper.width, 1)) / np.sqrt(hyper.width),
        "b2": np.zeros(1),
    }
    momentum = {f"v_{name}": np.zeros_like(value) for name, value in weights.items()}
    return weights | momentum


def sgd_step(
    state: dict[str, FloatArray],
    inputs: FloatArray,
    targets: FloatArray,
    hyper: Hyper,
) -> float:
    """One step of SGD with momentum on the minibatch (in place); the minibatch's loss [-]."""
    hidden = np.tanh(inputs @ state["w1"] + state["b1"])
    error = hidden @ state["w2"] + state["b2"] - targets
    loss = float(np.mean(error**2))
    d_out = 2.0 * error / len(inputs)
    grads = {"w2": hidden.T @ d_out, "b2": d_out.sum(axis=0)}
    d_hidden = (d_out @ state["w2"].T) * (1.0 - hidden**2)
    grads["w1"] = inputs.T @ d_hidden
    grads["b1"] = d_hidden.sum(axis=0)
    for name in _PARAMETERS:
        velocity = state[f"v_{name}"]
        velocity *= hyper.momentum
        velocity -= hyper.learning_rate * grads[name]
        state[name] += velocity
    return loss


def full_loss(state: Mapping[str, FloatArray], inputs: FloatArray, targets: FloatArray) -> float:
    hidden = np.tanh(inputs @ state["w1"] + state["b1"])
    return float(np.mean((hidden @ state["w2"] + state["b2"] - targets) ** 2))


# ---- the process -------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGTERM or SIGINT; the training loop checks it between steps."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def is_set(self) -> bool:
        return self.signal_name is not None


def _load(path: Path, hyper: Hyper) -> tuple[dict[str, FloatArray], np.random.Generator, int]:
    arrays, meta = read_arrays(path)
    if not isinstance(meta, dict) or meta.get("kind") != "checkpoint":
        raise CheckpointFileError(f"{path}: not a checkpoint (a final model?)")
    if meta.get("hyper") != hyper.to_json():
        raise CheckpointFileError(
            f"{path}: written by a run with {meta.get('hyper')}, this run has {hyper.to_json()}"
        )
    missing = set(initial_state(hyper)) - set(arrays)
    if missing:
        raise CheckpointFileError(f"{path}: missing arrays {sorted(missing)}")
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    return arrays, rng, int(meta["step"])


def _save_checkpoint(
    path: Path, state: Mapping[str, FloatArray], rng: np.random.Generator, step: int, hyper: Hyper
) -> None:
    meta = {
        "kind": "checkpoint",
        "step": step,
        "hyper": hyper.to_json(),
        "rng": rng.bit_generator.state,
    }
    write_arrays_atomically(path, state, meta)


def _confirm_resume(path: Path) -> None:
    """Tell the agent the checkpoint is loaded: create ``path`` (empty), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        os.fsync(stream.fileno())


def train(args: argparse.Namespace) -> int:
    hyper = Hyper(seed=args.seed, width=args.width)
    out_dir: Path = args.out
    checkpoint_path: Path = args.checkpoint or Path(
        os.environ.get(CHECKPOINT_ENV) or out_dir / "checkpoint.bin"
    )
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    inputs, targets = make_data(hyper)
    if args.resume is not None:
        try:
            state, rng, step = _load(args.resume, hyper)
        except CheckpointFileError as exc:
            log.error("cannot resume: %s", exc)
            return _EXIT_BAD_INPUT
        if args.load_delay_s > 0:
            time.sleep(args.load_delay_s)  # stands for a large model's load onto its GPUs
        hold(args.resume_gate, stop.is_set, f"holding the resume at step {step}", log)
        if args.resumed_file is not None and stop.signal_name is None:
            _confirm_resume(args.resumed_file)
        log.info("resumed from %s at step %d of %d", args.resume, step, args.steps)
    else:
        state, rng, step = initial_state(hyper), np.random.default_rng([hyper.seed, 2]), 0
        log.info("started at step 0 of %d (seed %d, width %d)", args.steps, hyper.seed, hyper.width)

    hold_at_step = args.steps - 1 if args.hold_at_step is None else args.hold_at_step
    while step < args.steps:
        if step == hold_at_step:
            hold(args.step_gate, stop.is_set, f"holding at step {step}", log)
        if stop.signal_name is not None:
            hold(
                args.checkpoint_gate,
                None,
                f"{stop.signal_name}: holding the checkpoint at step {step}",
                log,
            )
            started = time.perf_counter()
            _save_checkpoint(checkpoint_path, state, rng, step, hyper)
            log.info(
                "%s: checkpoint at step %d written to %s (%d bytes in %.4f s)",
                stop.signal_name,
                step,
                checkpoint_path,
                checkpoint_path.stat().st_size,
                time.perf_counter() - started,
            )
            return 0
        batch = rng.integers(0, hyper.samples, size=hyper.batch)
        sgd_step(state, inputs[batch], targets[batch], hyper)
        step += 1
        if args.step_sleep_s > 0:
            time.sleep(args.step_sleep_s)

    model = {name: state[name] for name in _PARAMETERS}
    loss = full_loss(model, inputs, targets)
    meta = {"kind": "model", "step": step, "hyper": hyper.to_json(), "loss": loss}
    write_arrays_atomically(out_dir / MODEL_FILE, model, meta)
    log.info("finished %d steps: loss %.6f, model in %s", step, loss, out_dir / MODEL_FILE)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.agent.example_job",
        description=(
            "Deterministic example training job (numpy MLP, SGD with momentum). SIGTERM: write "
            "the complete state to --checkpoint and exit 0; --resume continues bit for bit."
        ),
    )
    parser.add_argument("--steps", type=number(int, 1), required=True, help="steps in all")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--resume", type=Path, metavar="CHECKPOINT", help="continue from here")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help=f"where SIGTERM writes the state (default ${CHECKPOINT_ENV}, else DIR/checkpoint.bin)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data and initial weights (0)")
    parser.add_argument("--width", type=number(int, 1), default=256, help="hidden units (256)")
    parser.add_argument(
        "--step-sleep-s", type=number(float, 0), default=0.0, help="pause after each step [s]"
    )
    parser.add_argument(
        "--resumed-file",
        type=Path,
        metavar="PATH",
        help="create this file once a --resume checkpoint is loaded (the agent's {resumed_path})",
    )
    parser.add_argument(
        "--load-delay-s",
        type=number(float, 0),
        default=0.0,
        help="pause after loading a --resume checkpoint, before confirming it [s] (0)",
    )
    add_gate_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_hold_at_step(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s example_job: %(message)s")
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
