"""A PyTorch example training job of the site agent's checkpoint contract (``docs/site-agent.md``).

    python -m gateway.training.example_torch --steps N --out DIR [--resume CHECKPOINT]
        [--checkpoint PATH] [--seed S] [--width W] [--step-sleep-s S] [--resumed-file PATH]
        [--threads T] [--step-gate PATH [--hold-at-step K]] [--checkpoint-gate PATH]
        [--resume-gate PATH]

A multilayer perceptron (two hidden layers of ``--width`` units, LayerNorm, GELU, dropout)
learns to classify synthetic data (the labels of a random teacher network, 5 % of them noise)
with AdamW under a one-cycle learning-rate schedule. The data set, the initial weights and the
dropout masks follow from ``--seed``; the minibatches are drawn by a ``torch.Generator`` of
their own. Everything random is part of the checkpoint
(:mod:`gateway.training.checkpointing`), so dropout and data order continue exactly.

- On SIGTERM (or SIGINT) the job finishes the step it is in, writes its complete state to
  ``--checkpoint`` (default: ``$DR_AGENT_CHECKPOINT_PATH``, else ``DIR/checkpoint.pt``)
  atomically and exits 0 at once (``exit_now``: without the interpreter's shutdown, which
  takes about 0.8 s with torch loaded).
- Given ``--resume CHECKPOINT`` it continues from that state: the final model is the same, bit
  for bit, as that of a run that was never interrupted (same arguments, same torch build,
  same ``--threads``). With ``--resumed-file PATH`` it creates that file once the checkpoint
  is loaded.
- After ``--steps`` steps it writes the final parameters to ``DIR/model.bin`` and the final
  loss and accuracy to ``DIR/metrics.json`` (both atomically) and exits 0.

Determinism on CPU: the job runs ``torch.set_num_threads(--threads)`` (default 1) and
``torch.use_deterministic_algorithms(True)``. The result depends on the thread count: work
split over 2 threads is summed in another order than over 1. Measured with torch 2.13 on
x86-64: the parameters of 1 and 2 threads differ in their last bits from the first step on
(LayerNorm's weight and bias gradients), at every width tried (8 to 256). Resume a run with the
``--threads`` it started with; then it ends byte for byte as if never interrupted.

Gates, for tests only, with the semantics of :mod:`gateway.agent.example_job`: a test holds
the job in a named state until it creates the gate file; the job logs one line when it starts
to wait and polls for the file every 10 ms.

- ``--step-gate PATH``: after ``--hold-at-step K`` steps (default: all but the last) wait until
  PATH exists ("holding at step K until PATH exists"); a SIGTERM meanwhile checkpoints at
  step K; a job resumed from step K waits there again.
- ``--checkpoint-gate PATH``: on SIGTERM wait until PATH exists before writing the checkpoint.
- ``--resume-gate PATH``: after loading a ``--resume`` checkpoint wait until PATH exists before
  confirming it; a SIGTERM meanwhile ends the wait unconfirmed and checkpoints.

Exit codes: 0 finished or checkpointed, 2 bad arguments or an unusable checkpoint (the message
names the file).

``model.bin`` is written so that equal parameters give equal bytes (``torch.save``'s zip
archive does not promise that): a magic line, the header's length (8 bytes, little-endian), a
JSON header (sorted keys: each tensor's name, shape and dtype in ``state_dict`` order, and the
run's metadata), then each tensor's raw little-endian bytes in that order.
:func:`read_model_file` reads it back.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn
from torch.nn import functional

from gateway.training.checkpointing import (
    CheckpointFormatError,
    StopFlag,
    add_contract_arguments,
    confirm_resumed,
    contract_paths,
    exit_now,
    load_training_state,
    save_training_state,
    write_atomically,
)
from gateway.training.gates import add_gate_arguments, check_hold_at_step, hold, number

log = logging.getLogger("gateway.training.example_torch")

MODEL_FILE = "model.bin"
"""The final parameters' file name inside ``--out``."""
METRICS_FILE = "metrics.json"
"""The final loss and accuracy's file name inside ``--out``."""
DEFAULT_CHECKPOINT = "checkpoint.pt"
"""The checkpoint's file name inside ``--out`` when neither argument nor environment names one."""

_MAGIC = b"DRGW-TORCH-MODEL 1\n"
_LENGTH_BYTES = 8
_ORDER_SEED_SALT = 0x5EED_0DE5
_DATA_ORDER = "data_order"
_EXIT_BAD_INPUT = 2
"""How often a job held at a gate looks for the gate's file [s]."""


@dataclass(frozen=True)
class Hyper:
    """The problem, the model, the optimiser and the schedule (whose length is ``steps``); a
    checkpoint only resumes a run of the same."""

    seed: int
    width: int
    steps: int
    features: int = 32
    classes: int = 8
    samples: int = 2048
    batch: int = 64
    dropout: float = 0.1
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    label_noise: float = 0.05


@dataclass
class Run:
    """What one run trains: data, model, optimiser, schedule and the data order's generator."""

    hyper: Hyper
    inputs: torch.Tensor
    labels: torch.Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order: torch.Generator


# ---- the model -------------------------------------------------------------------------------


def make_data(hyper: Hyper) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic data set: Gaussian inputs, labels of a random tanh teacher, some noise."""
    generator = torch.Generator().manual_seed(hyper.seed)
    inputs = torch.randn(hyper.samples, hyper.features, generator=generator)
    teacher_in = torch.randn(hyper.features, 64, generator=generator) / hyper.features**0.5
    teacher_out = torch.randn(64, hyper.classes, generator=generator) / 8.0
    labels = (torch.tanh(inputs @ teacher_in) @ teacher_out).argmax(dim=1)
    noisy = torch.rand(hyper.samples, generator=generator) < hyper.label_noise
    noise = torch.randint(hyper.classes, (hyper.samples,), generator=generator)
    return inputs, torch.where(noisy, noise, labels)


def build_model(hyper: Hyper) -> nn.Module:
    """The classifier; its initial weights come from torch's default generator."""
    return nn.Sequential(
        nn.Linear(hyper.features, hyper.width),
        nn.LayerNorm(hyper.width),
        nn.GELU(),
        nn.Dropout(hyper.dropout),
        nn.Linear(hyper.width, hyper.width),
        nn.GELU(),
        nn.Dropout(hyper.dropout),
        nn.Linear(hyper.width, hyper.classes),
    )


def new_run(hyper: Hyper) -> Run:
    """A run at step 0: every generator seeded from ``hyper.seed``."""
    torch.manual_seed(hyper.seed)  # initial weights, then dropout masks
    inputs, labels = make_data(hyper)
    model = build_model(hyper)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hyper.max_lr, weight_decay=hyper.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=hyper.max_lr, total_steps=hyper.steps
    )
    order = torch.Generator().manual_seed(hyper.seed ^ _ORDER_SEED_SALT)
    return Run(hyper, inputs, labels, model, optimizer, scheduler, order)


def train_step(run: Run) -> float:
    """One optimiser step on a minibatch drawn by the run's generator; the minibatch's loss."""
    run.model.train()
    batch = torch.randint(run.hyper.samples, (run.hyper.batch,), generator=run.order)
    loss = functional.cross_entropy(run.model(run.inputs[batch]), run.labels[batch])
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return float(loss.item())


def evaluate(run: Run) -> dict[str, float]:
    """Loss and accuracy on the whole data set, without dropout."""
    run.model.eval()
    with torch.no_grad():
        logits = run.model(run.inputs)
        loss = functional.cross_entropy(logits, run.labels)
        accuracy = (logits.argmax(dim=1) == run.labels).to(torch.float64).mean()
    return {"loss": float(loss.item()), "accuracy": float(accuracy.item())}


# ---- the model file --------------------------------------------------------------------------


def _little_endian_bytes(tensor: torch.Tensor) -> bytes:
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    if sys.byteorder == "big" and tensor.element_size() > 1:
        raw = raw.reshape(-1, tensor.element_size()).flip(1).reshape(-1)
    return bytes(raw.numpy().tobytes())


def _write_model(stream: BinaryIO, state: Mapping[str, torch.Tensor], meta: object) -> None:
    tensors = [
        {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for name, t in state.items()
    ]
    header = json.dumps({"tensors": tensors, "meta": meta}, sort_keys=True).encode()
    stream.write(_MAGIC)
    stream.write(len(header).to_bytes(_LENGTH_BYTES, "little"))
    stream.write(header)
    for tensor in state.values():
        stream.write(_little_endian_bytes(tensor))


def write_model_file(path: Path, state: Mapping[str, torch.Tensor], meta: object) -> None:
    """Write ``state`` (a ``state_dict``) and ``meta`` (JSON data) to ``path`` atomically, in
    the byte-exact format of the module docstring."""
    write_atomically(path, lambda stream: _write_model(stream, state, meta))


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """The tensors (in order) and metadata of a file of :func:`write_model_file` (on a
    little-endian machine)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read: {exc.strerror}") from exc
    if not data.startswith(_MAGIC):
        raise CheckpointFormatError(f"{path}: not a model file of this job (bad magic)")
    start = len(_MAGIC) + _LENGTH_BYTES
    length = int.from_bytes(data[len(_MAGIC) : start], "little")
    try:
        header = json.loads(data[start : start + length])
        offset, tensors = start + length, {}
        for entry in header["tensors"]:
            dtype = getattr(torch, entry["dtype"])
            count = 1
            for size in entry["shape"]:
                count *= size
            size_bytes = count * dtype.itemsize
            chunk = bytearray(data[offset : offset + size_bytes])
            tensors[entry["name"]] = torch.frombuffer(chunk, dtype=dtype).reshape(entry["shape"])
            offset += size_bytes
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{path}: damaged model file: {exc}") from exc
    if offset != len(data):
        raise CheckpointFormatError(f"{path}: {len(data) - offset} bytes after the last tensor")
    return tensors, header["meta"]


# ---- the process -----------------------------------------------------------------------------


def _resume(
    run: Run, stop: StopFlag, resume: Path, resumed_file: Path | None, gate: Path | None
) -> int:
    """Load ``resume`` into ``run``, pass the resume ``gate``, create ``resumed_file``; the
    step to run next."""
    resumed = load_training_state(
        resume,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        generators={_DATA_ORDER: run.order},
    )
    expected = {"hyper": asdict(run.hyper)}
    if resumed.extra != expected:
        raise CheckpointFormatError(
            f"{resume}: written by a run with {resumed.extra}, this run has {expected}"
        )
    hold(gate, lambda: stop.is_set, f"holding the resume at step {resumed.step}", log)
    if resumed_file is not None and not stop.is_set:
        confirm_resumed(resumed_file)
    log.info("resumed from %s at step %d of %d", resume, resumed.step, run.hyper.steps)
    return resumed.step


def _checkpoint(run: Run, step: int, path: Path, stop: StopFlag, gate: Path | None) -> None:
    hold(gate, None, f"{stop.signal_name}: holding the checkpoint at step {step}", log)
    started = time.perf_counter()
    save_training_state(
        path,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        step=step,
        extra={"hyper": asdict(run.hyper)},
        generators={_DATA_ORDER: run.order},
    )
    log.info(
        "%s: checkpoint at step %d written to %s (%d bytes in %.4f s)",
        stop.signal_name,
        step,
        path,
        path.stat().st_size,
        time.perf_counter() - started,
    )


def _finish(run: Run, out_dir: Path, threads: int) -> None:
    metrics = evaluate(run)
    hyper = asdict(run.hyper)
    write_model_file(out_dir / MODEL_FILE, run.model.state_dict(), {"hyper": hyper})
    summary = {
        "steps": run.hyper.steps,
        "final_loss": metrics["loss"],
        "final_accuracy": metrics["accuracy"],
        "hyper": hyper,
        "threads": threads,
    }
    text = json.dumps(summary, sort_keys=True, indent=2) + "\n"
    write_atomically(out_dir / METRICS_FILE, lambda stream: stream.write(text.encode()))
    log.info(
        "finished %d steps: loss %.6f, accuracy %.4f, model in %s",
        run.hyper.steps,
        metrics["loss"],
        metrics["accuracy"],
        out_dir / MODEL_FILE,
    )


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Run (or resume) the job; the process's exit code."""
    hyper = Hyper(seed=args.seed, width=args.width, steps=args.steps)
    paths = contract_paths(args, default_checkpoint=args.out / DEFAULT_CHECKPOINT)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    run = new_run(hyper)
    step = 0
    if paths.resume is not None:
        try:
            step = _resume(run, stop, paths.resume, paths.resumed_file, args.resume_gate)
        except CheckpointFormatError as exc:
            log.error("cannot resume: %s", exc)
            return _EXIT_BAD_INPUT
    else:
        log.info(
            "started at step 0 of %d (seed %d, width %d, threads %d)",
            hyper.steps,
            hyper.seed,
            hyper.width,
            args.threads,
        )
    hold_at_step = hyper.steps - 1 if args.hold_at_step is None else args.hold_at_step
    while step < hyper.steps:
        if step == hold_at_step:
            hold(args.step_gate, lambda: stop.is_set, f"holding at step {step}", log)
        if stop.is_set:
            _checkpoint(run, step, paths.checkpoint, stop, args.checkpoint_gate)
            exit_now(0)  # the checkpoint is durable: the GPUs need not wait for a shutdown
        train_step(run)
        step += 1
        if args.step_sleep_s > 0:
            time.sleep(args.step_sleep_s)
    _finish(run, args.out, args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.training.example_torch",
        description=(
            "Deterministic PyTorch example training job (MLP, AdamW, one-cycle LR, dropout). "
            "SIGTERM: write the complete state to --checkpoint and exit 0; --resume continues "
            "bit for bit."
        ),
    )
    parser.add_argument("--steps", type=number(int, 1), required=True, help="steps in all")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    add_contract_arguments(parser)
    parser.add_argument("--seed", type=number(int, 0), default=0, help="everything random (0)")
    parser.add_argument("--width", type=number(int, 1), default=256, help="hidden units (256)")
    parser.add_argument(
        "--step-sleep-s", type=number(float, 0), default=0.0, help="pause after each step [s]"
    )
    parser.add_argument(
        "--threads", type=number(int, 1), default=1, help="torch's intra-op threads (1)"
    )
    add_gate_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with StopFlag() as stop:  # before the set-up: a SIGTERM from now on checkpoints
        parser = build_parser()
        args = parser.parse_args(argv)
        check_hold_at_step(parser, args)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s example_torch: %(message)s")
        return train(args, stop)


if __name__ == "__main__":
    sys.exit(main())
