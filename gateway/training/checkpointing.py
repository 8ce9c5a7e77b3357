"""Checkpointing for a PyTorch training loop under the site agent's checkpoint contract.

The contract (``docs/site-agent.md``, "The checkpoint contract"): on SIGTERM a job writes its
complete state atomically to its checkpoint path and exits 0; started again with
``--resume PATH`` appended it continues exactly; with ``--resumed-file PATH`` it creates that
file once the checkpoint is loaded; when it completes it writes its results and exits 0
without a checkpoint. This module imports only the standard library and torch (numpy only if
it is importable), so a user can import it or copy the idea.

Adapting a loop takes four changes: install the stop flag first, read the contract's paths,
load a ``--resume`` checkpoint after building the model, optimiser and scheduler (and before
the first step), and look at the flag between steps::

    import argparse, sys
    from pathlib import Path
    from gateway.training.checkpointing import (
        StopFlag, add_contract_arguments, confirm_resumed, contract_paths,
        load_training_state, save_training_state)

    stop = StopFlag().install()              # SIGTERM/SIGINT now only set the flag
    parser = argparse.ArgumentParser()
    add_contract_arguments(parser)           # --checkpoint, --resume, --resumed-file
    paths = contract_paths(parser.parse_args(), default_checkpoint=Path("checkpoint.pt"))
    model, optimizer, scheduler = build()    # seeded as in a fresh run
    step = 0
    if paths.resume is not None:
        step, _extra = load_training_state(paths.resume, model=model, optimizer=optimizer,
                                           scheduler=scheduler, generators={"data": order})
        if paths.resumed_file is not None:
            confirm_resumed(paths.resumed_file)
    while step < total_steps:
        if stop.is_set:                       # between steps, never inside one
            save_training_state(paths.checkpoint, model=model, optimizer=optimizer,
                                scheduler=scheduler, step=step, generators={"data": order})
            exit_now(0)                      # skip the interpreter's slow shutdown
        train_one_step(...)
        step += 1
    write_results_atomically(...)            # then exit 0 without a checkpoint

What a checkpoint holds: the model's, the optimiser's and the LR scheduler's ``state_dict``,
the step, every random generator state (torch's default CPU generator, the named
``torch.Generator`` objects passed as ``generators``, Python's :mod:`random` and numpy's legacy
global generator if numpy is importable) and a user's ``extra`` (tensors and plain data only).
Not covered: CUDA generators (a GPU job adds ``torch.cuda.get_rng_state_all()`` to ``extra``
and restores it itself, if the target has as many devices), numpy ``Generator`` objects (store
``bit_generator.state`` in ``extra``), data-loader worker processes (their state lives in the
workers: derive it from the step or the saved generators).

The file is a ``torch.save`` archive read back with ``torch.load(weights_only=True)``: loading
a checkpoint never runs code from it. Everything in it is a tensor or plain data: Python's
random state is a tuple of ints, which ``weights_only`` accepts; numpy's key array is stored as
an int64 tensor. Its bytes are not stable between torch versions or runs (zip metadata): compare
models, not checkpoint files.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pickle
import random
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, BinaryIO, NamedTuple, NoReturn

import torch
from torch.optim.lr_scheduler import LRScheduler

CHECKPOINT_ENV = "DR_AGENT_CHECKPOINT_PATH"
"""Where the agent wants the checkpoint written, when the command does not say."""
RESUME_OPTION = "--resume"
"""The option the agent appends, with the checkpoint's path, to run a job on from it."""
FORMAT = "dr-gateway.training-state"
"""The marker of a checkpoint of this module (the ``format`` entry of the saved dict)."""
FORMAT_VERSION = 1
_ENTRIES = ("step", "model", "optimizer", "scheduler", "rng", "extra")
_REFUSAL_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.DOTALL)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class CheckpointFormatError(Exception):
    """A file that is not a checkpoint of this format, or does not fit the model, optimiser,
    scheduler or generators it is loaded into. The message names the file."""


class Resumed(NamedTuple):
    """What :func:`load_training_state` returns besides the restored objects."""

    step: int
    extra: Any


# ---- stopping between steps ------------------------------------------------------------------


class StopFlag:
    """Set by SIGTERM or SIGINT, looked at by the training loop between steps.

    Once installed, the signals only set the flag: a step in progress finishes, and a second
    signal (the agent's SIGTERM goes to the whole process group, an impatient user presses
    Ctrl-C twice) cannot interrupt the checkpoint being written. Install it as early as
    possible, before the set-up: a SIGTERM that arrives earlier (importing torch alone takes
    about a second) kills the job, which the agent counts as a failure and restarts from the
    newest checkpoint.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        """The first signal received (``"SIGTERM"``, ``"SIGINT"``), None before any."""
        self.signals_received = 0
        self._previous: dict[int, _Handler] = {}

    @property
    def is_set(self) -> bool:
        return self.signal_name is not None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.signals_received += 1

    def install(self) -> StopFlag:
        """Make SIGTERM and SIGINT set this flag (main thread only); returns the flag."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self)
        return self

    def uninstall(self) -> None:
        """Give SIGTERM and SIGINT back the handlers they had before :meth:`install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *_exc: object) -> None:
        self.uninstall()


# ---- atomic files ----------------------------------------------------------------------------


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write`` writes to a stream, so that ``path`` is
    at every moment absent, the old file or the whole new one, even across a power cut: a
    temporary file in the same directory, flush and fsync, ``os.replace``, fsync of the
    directory. If ``write`` raises, the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def exit_now(code: int = 0) -> NoReturn:
    """Flush the log and the standard streams, then end the process at once (``os._exit``).

    Call it once the checkpoint is durable (``save_training_state`` returned): the interpreter's
    own shutdown with torch loaded takes about 0.8 s (measured, ``benchmarks/slurm_migration.py``)
    during which the job still holds its GPUs and the migration waits. Nothing is lost: the
    checkpoint file and its directory are already synced."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def confirm_resumed(path: Path) -> None:
    """Tell the agent the checkpoint is loaded: create ``path`` (empty), durably. Call it only
    once the state is restored; the agent counts the restore completed when the file exists."""
    write_atomically(path, lambda _stream: None)


# ---- the training state ----------------------------------------------------------------------


def _numpy() -> ModuleType | None:
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


def _rng_states(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "python": random.getstate(),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    numpy = _numpy()
    if numpy is not None:
        kind, keys, position, has_gauss, cached_gaussian = numpy.random.get_state()
        states["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(numpy.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    return states


def _restore_rng(path: Path, states: Any, generators: Mapping[str, torch.Generator]) -> None:
    try:
        saved = states["generators"]
        missing = sorted(set(generators) - set(saved))
        if missing:
            raise CheckpointFormatError(f"{path}: no state for the generators {missing}")
        torch.random.set_rng_state(states["torch"])
        for name, generator in generators.items():
            generator.set_state(saved[name])
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
        numpy = _numpy()
        if numpy is not None and "numpy" in states:
            state = states["numpy"]
            keys = state["keys"].numpy().astype(numpy.uint32)
            numpy.random.set_state(
                (
                    state["kind"],
                    keys,
                    state["position"],
                    state["has_gauss"],
                    state["cached_gaussian"],
                )
            )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointFormatError(f"{path}: damaged random generator states: {exc}") from exc


def save_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None = None,
    step: int,
    extra: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> None:
    """Write the complete training state to ``path`` atomically (:func:`write_atomically`).

    ``step``: the steps done so far (the step to run next, counted from 0). ``generators``: the
    loop's own ``torch.Generator`` objects by name (e.g. the one that orders the data).
    ``extra``: anything else the run needs to continue, made of tensors and plain data (dict,
    list, tuple, str, int, float, bool, None) so that ``weights_only`` loading accepts it.
    Call it between steps: after ``optimizer.step()`` and ``scheduler.step()``, never with
    gradients of a half-done step pending."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": _rng_states(generators or {}),
        "extra": extra,
    }
    write_atomically(path, lambda stream: torch.save(payload, stream))


def _read_payload(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except pickle.UnpicklingError as exc:
        found = _REFUSAL_DETAIL.search(str(exc))
        detail = found.group(1).strip() if found else "not a torch file"
        raise CheckpointFormatError(
            f"{path}: not a training checkpoint of this format "
            f"(torch.load with weights_only=True refused it: {detail})"
        ) from exc
    except Exception as exc:  # torch.load raises many kinds on damaged bytes
        raise CheckpointFormatError(
            f"{path}: damaged or not a torch file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointFormatError(
            f"{path}: not a training checkpoint of this format (no {FORMAT!r} marker)"
        )
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path}: format version {payload.get('version')!r}, this code reads {FORMAT_VERSION}"
        )
    missing = [entry for entry in _ENTRIES if entry not in payload]
    if missing:
        raise CheckpointFormatError(f"{path}: missing entries {missing}")
    step = payload["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointFormatError(f"{path}: bad step {step!r}")
    return payload


def load_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> Resumed:
    """Restore the state :func:`save_training_state` wrote to ``path`` into ``model``,
    ``optimizer``, ``scheduler`` and ``generators`` (built as for a fresh run, with the same
    shapes and parameter groups) and into the global random generators; return the step to
    run next and the ``extra``.

    Raises :class:`CheckpointFormatError` (naming the file) for a file that is missing,
    damaged, of another format, or that does not fit the objects given. The objects may be
    partly restored when it does: give up the run then, do not train on."""
    payload = _read_payload(path)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointFormatError(f"{path}: does not fit the model: {exc}") from exc
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{path}: does not fit the optimiser: {exc}") from exc
    if scheduler is None and payload["scheduler"] is not None:
        raise CheckpointFormatError(f"{path}: holds a scheduler's state, but no scheduler is given")
    if scheduler is not None:
        if payload["scheduler"] is None:
            raise CheckpointFormatError(
                f"{path}: holds no scheduler state, but a scheduler is given"
            )
        try:
            scheduler.load_state_dict(payload["scheduler"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointFormatError(f"{path}: does not fit the scheduler: {exc}") from exc
    _restore_rng(path, payload["rng"], generators or {})
    return Resumed(payload["step"], payload["extra"])


# ---- the contract's paths --------------------------------------------------------------------


class ContractPaths(NamedTuple):
    """The files of the contract for this run.

    checkpoint: where to write the checkpoint on SIGTERM (the ``--checkpoint`` argument, e.g.
        the agent's ``{checkpoint_path}`` placeholder; else ``$DR_AGENT_CHECKPOINT_PATH``; else
        the program's default)
    resume: the checkpoint to continue from (``--resume``, appended by the agent), or None
    resumed_file: the file to create once ``resume`` is loaded (``--resumed-file``, the agent's
        ``{resumed_path}`` placeholder), or None: the agent waits for it only when the command
        names the placeholder, so it is an argument, never read from the environment
    """

    checkpoint: Path
    resume: Path | None
    resumed_file: Path | None


def add_contract_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the contract's options ``--checkpoint``, ``--resume`` and ``--resumed-file`` to a
    program's own parser (read them back with :func:`contract_paths`)."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help=f"where SIGTERM writes the state (default: ${CHECKPOINT_ENV}, else the program's)",
    )
    parser.add_argument(
        RESUME_OPTION, type=Path, metavar="CHECKPOINT", help="continue from this checkpoint"
    )
    parser.add_argument(
        "--resumed-file",
        type=Path,
        metavar="PATH",
        help="create this file once a --resume checkpoint is loaded (the agent's {resumed_path})",
    )


def contract_paths(
    args: argparse.Namespace | Sequence[str] | None = None,
    *,
    default_checkpoint: Path,
    environ: Mapping[str, str] | None = None,
) -> ContractPaths:
    """The contract's paths of this run, from ``args``: a namespace parsed by a parser given
    :func:`add_contract_arguments`, or a command line (default ``sys.argv[1:]``) from which
    only the contract's options are taken, the others left alone. ``environ`` defaults to
    ``os.environ``."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(add_help=False)
        add_contract_arguments(parser)
        args, _others = parser.parse_known_args(args)
    environment = os.environ if environ is None else environ
    from_environment = environment.get(CHECKPOINT_ENV)
    checkpoint: Path = args.checkpoint or (
        Path(from_environment) if from_environment else default_checkpoint
    )
    return ContractPaths(checkpoint, args.resume, args.resumed_file)
