"""The checkpoint helper of PyTorch training loops (``gateway/training/checkpointing.py``), in
process: a saved state continues exactly, every random generator included; the save is atomic;
a second signal cannot abort it; foreign and damaged files are refused by name (in the
integration layer: the helper's subject is a file, written under pytest's ``tmp_path``)."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gateway.training import checkpointing
from gateway.training.checkpointing import (
    CHECKPOINT_ENV,
    CheckpointFormatError,
    StopFlag,
    contract_paths,
    load_training_state,
    save_training_state,
)


class Trainer:
    """A tiny model with dropout, Adam, a step schedule and a data-order generator."""

    def __init__(self, seed: int, width: int = 6) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, width), nn.Dropout(0.3), nn.Linear(width, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)
        self.order = torch.Generator().manual_seed(seed + 1)
        self.data = torch.randn(32, 4, generator=torch.Generator().manual_seed(7))

    def steps(self, count: int) -> None:
        for _ in range(count):
            batch = self.data[torch.randint(32, (8,), generator=self.order)]
            loss = (self.model(batch) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()

    def save(self, path: Path, step: int, extra: Any = None) -> None:
        save_training_state(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            step=step,
            extra=extra,
            generators={"order": self.order},
        )

    def load(self, path: Path) -> checkpointing.Resumed:
        return load_training_state(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generators={"order": self.order},
        )

    def parameters(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def draws(order: torch.Generator) -> list[float]:
    """The next numbers of every generator a checkpoint restores."""
    return [
        *torch.rand(3).tolist(),
        *torch.rand(3, generator=order).tolist(),
        random.random(),
        float(np.random.rand()),
    ]


def test_round_trip_restores_model_optimizer_scheduler_and_every_generator(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.pt"
    saved = Trainer(seed=1)
    saved.steps(3)
    extra = {"note": "run 1", "losses": torch.tensor([0.5, 0.25])}
    saved.save(path, step=3, extra=extra)
    expected_draws = draws(saved.order)

    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    fresh = Trainer(seed=2)
    assert draws(fresh.order) != expected_draws
    step, loaded_extra = fresh.load(path)

    assert step == 3
    assert loaded_extra["note"] == "run 1"
    assert torch.equal(loaded_extra["losses"], extra["losses"])
    assert all(map(torch.equal, fresh.parameters(), saved.parameters()))
    assert fresh.scheduler.get_last_lr() == saved.scheduler.get_last_lr()
    assert draws(fresh.order) == expected_draws


def test_a_loaded_state_trains_on_bit_for_bit(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    straight = Trainer(seed=3)
    straight.steps(4)
    straight.save(path, step=4)
    straight.steps(5)

    resumed = Trainer(seed=4)
    resumed.load(path)
    resumed.steps(5)
    assert all(map(torch.equal, resumed.parameters(), straight.parameters()))


def test_save_leaves_no_temporary_file_and_a_failed_save_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.pt"
    trainer = Trainer(seed=5)
    trainer.save(path, step=1)
    assert os.listdir(tmp_path) == ["state.pt"]
    with pytest.raises(Exception, match="pickle"):
        trainer.save(path, step=2, extra={"not data": lambda: None})
    assert os.listdir(tmp_path) == ["state.pt"]
    assert Trainer(seed=5).load(path).step == 1


@pytest.fixture
def signals_inside_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[signal.Signals]]:
    """While the helper writes, its first fsync sends this process the signals of the list."""
    to_send: list[signal.Signals] = []
    real_fsync: Callable[[int], None] = os.fsync

    def fsync_with_signals(descriptor: int) -> None:
        while to_send:
            os.kill(os.getpid(), to_send.pop(0))
        real_fsync(descriptor)

    monkeypatch.setattr(checkpointing.os, "fsync", fsync_with_signals)
    yield to_send


def test_signals_while_saving_do_not_abort_the_save(
    tmp_path: Path, signals_inside_fsync: list[signal.Signals]
) -> None:
    path = tmp_path / "state.pt"
    trainer = Trainer(seed=6)
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        signals_inside_fsync.extend([signal.SIGINT, signal.SIGTERM])
        trainer.save(path, step=7)
    assert signals_inside_fsync == [], "the signals were sent during the save"
    assert stop.signals_received == 3
    assert stop.signal_name == "SIGTERM", "the first signal is kept"
    assert Trainer(seed=6).load(path).step == 7
    assert os.listdir(tmp_path) == ["state.pt"]


def test_without_the_flag_the_same_signal_aborts_the_save(
    tmp_path: Path, signals_inside_fsync: list[signal.Signals]
) -> None:
    """The control of the test above: its signals do arrive in the middle of the write."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signals_inside_fsync.append(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            Trainer(seed=6).save(tmp_path / "state.pt", step=7)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert os.listdir(tmp_path) == [], "no checkpoint and no temporary file"


def test_the_flag_gives_back_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        assert signal.getsignal(signal.SIGTERM) is stop
    assert signal.getsignal(signal.SIGTERM) is before


class Foreign:
    """An object ``torch.load(weights_only=True)`` refuses to build."""


def _write_foreign_files(directory: Path) -> dict[str, tuple[Path, str]]:
    """Bad files by case: (path, a phrase the error names besides the path)."""
    good = directory / "good.pt"
    Trainer(seed=8).save(good, step=2)
    files = {
        "garbage": (b"not a checkpoint at all" * 8, "not a training checkpoint"),
        "empty": (b"", "damaged or not a torch file"),
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "damaged"),
    }
    cases = {name: (directory / name, phrase) for name, (_, phrase) in files.items()}
    for name, (content, _) in files.items():
        (directory / name).write_bytes(content)
    torch.save({"weights": torch.zeros(3)}, directory / "plain_weights")
    cases["plain_weights"] = (directory / "plain_weights", "not a training checkpoint")
    torch.save({"format": checkpointing.FORMAT, "obj": Foreign()}, directory / "pickled_object")
    cases["pickled_object"] = (directory / "pickled_object", "Foreign")
    cases["missing"] = (directory / "missing", "cannot read")
    wide = directory / "wide.pt"
    Trainer(seed=8, width=9).save(wide, step=2)
    cases["other_width"] = (wide, "does not fit the model")
    return cases


def test_load_refuses_damaged_and_foreign_files_by_name(tmp_path: Path) -> None:
    for case, (path, phrase) in _write_foreign_files(tmp_path).items():
        with pytest.raises(CheckpointFormatError) as raised:
            Trainer(seed=8).load(path)
        assert str(path) in str(raised.value), case
        assert phrase in str(raised.value), (case, str(raised.value))


def test_load_refuses_a_checkpoint_without_the_scheduler_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    trainer = Trainer(seed=9)
    save_training_state(path, model=trainer.model, optimizer=trainer.optimizer, step=0)
    with pytest.raises(CheckpointFormatError, match="holds no scheduler state"):
        trainer.load(path)


def test_contract_paths_argument_then_environment_then_default(tmp_path: Path) -> None:
    default = tmp_path / "default.pt"
    environ = {CHECKPOINT_ENV: "/agent/pending.pt"}
    argv = ["--lr", "0.1", "--checkpoint", "/arg.pt", "--resume", "/old.pt"]
    assert contract_paths(argv, default_checkpoint=default, environ=environ) == (
        Path("/arg.pt"),
        Path("/old.pt"),
        None,
    )
    paths = contract_paths(
        ["--resumed-file", "/agent/resumed"], default_checkpoint=default, environ=environ
    )
    assert paths == (Path("/agent/pending.pt"), None, Path("/agent/resumed"))
    assert contract_paths([], default_checkpoint=default, environ={}).checkpoint == default
