"""Benchmark: checkpoint transfer between two agents on loopback, sha256 on both sides.

Run: .venv/bin/python -m benchmarks.transfer [--size-gb G] [--rates-gbps R,R] [--chunk-mib M]
     [--batch-mib M] [--runs N] [--dir DIR] [--in-process] [--no-fsync] [--no-direct-io]
Writes a checkpoint of ``--size-gb`` random bytes into a temporary directory (after checking
the free space), starts the receiving side (``checkpoint_routes``) in a separate process (and,
with ``--in-process``, also in the sender's own event loop) and sends the file with
``send_checkpoint``:

- unthrottled, the sender hashing the file first (``sha256=None``);
- unthrottled, the sha256 known beforehand (the agent computes it when the job checkpoints);
- throttled to each of ``--rates-gbps`` (sha256 known).

The receiver always hashes while receiving, writes with O_DIRECT (unless ``--no-direct-io``)
and fsyncs the verified file before renaming it (unless ``--no-fsync``). Prints GB/s (1 GB =
1e9 bytes) of each run, and for the throttled ones the fraction of the configured rate.
Targets (issue 5): >= 0.5 GB/s unthrottled, >= 90 % of the configured rate throttled. The
source file sits in the page cache (just written): this measures the network path, hashing
and the receiver's writes, not reading a cold disk. Both sides share the machine's CPUs, so
other load on it lowers the unthrottled figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.agent.checkpoint_receiver import DEFAULT_BATCH_BYTES
from gateway.agent.transfer import (
    DEFAULT_CHUNK_BYTES,
    SendResult,
    bearer_authorizer,
    checkpoint_routes,
    file_sha256,
    send_checkpoint,
)

TOKEN = "benchmark-token"
_WRITE_BYTES = 64 * 1024 * 1024
_SPARE_BYTES = 256 * 1024 * 1024


def _write_random(path: Path, size_bytes: int) -> None:
    import numpy as np  # here: the receiver process does not need numpy's threads

    rng = np.random.default_rng(20261127)
    with path.open("wb") as stream:
        remaining = size_bytes
        while remaining > 0:
            n = min(_WRITE_BYTES, remaining)
            stream.write(rng.bytes(n))
            remaining -= n


async def _start_receiver(
    store_dir: Path, batch_bytes: int, fsync: bool, direct_io: bool
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(
        checkpoint_routes(
            store_dir,
            bearer_authorizer(TOKEN),
            batch_bytes=batch_bytes,
            fsync=fsync,
            direct_io=direct_io,
        )
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def _serve(
    store_dir: Path, batch_bytes: int, fsync: bool, direct_io: bool, conn: Connection
) -> None:
    runner, url = await _start_receiver(store_dir, batch_bytes, fsync, direct_io)
    conn.send(url)
    try:
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    finally:
        await runner.cleanup()


def _receiver_process(
    store_dir: str, batch_bytes: int, fsync: bool, direct_io: bool, conn: Connection
) -> None:
    asyncio.run(_serve(Path(store_dir), batch_bytes, fsync, direct_io, conn))


def _clear(store_dir: Path) -> None:
    for entry in store_dir.iterdir():
        entry.unlink()


async def _runs(
    label: str,
    runs: int,
    store_dir: Path,
    send: Callable[[str], Awaitable[SendResult]],
    rate_bytes_per_s: float | None,
) -> None:
    rates_gb_per_s = []
    for _ in range(runs):
        _clear(store_dir)
        result = await send(f"bench-{time.monotonic_ns()}")
        if result.attempts != 1 or result.sent_bytes != result.size_bytes:
            raise RuntimeError(f"{label}: unexpected transfer {result}")
        rates_gb_per_s.append(result.rate_bytes_per_s / 1e9)
    rate = statistics.median(rates_gb_per_s)
    spread = f"{min(rates_gb_per_s):.3f}-{max(rates_gb_per_s):.3f}" if runs > 1 else ""
    line = f"  {label:<34} {rate:6.3f} GB/s {spread}"
    if rate_bytes_per_s is not None:
        line += f"  ({rate * 1e9 / rate_bytes_per_s:6.1%} of {rate_bytes_per_s * 8 / 1e9:g} Gbit/s)"
    print(line, flush=True)


async def _measure(
    args: argparse.Namespace, source: Path, sha256: str, url: str, store_dir: Path
) -> None:
    chunk_bytes = int(args.chunk_mib * 1024 * 1024)
    async with aiohttp.ClientSession() as session:

        def sender(
            rate_bytes_per_s: float | None, known: str | None
        ) -> Callable[[str], Awaitable[SendResult]]:
            async def send(migration_id: str) -> SendResult:
                return await send_checkpoint(
                    session,
                    source,
                    url,
                    TOKEN,
                    migration_id,
                    rate_bytes_per_s=rate_bytes_per_s,
                    chunk_bytes=chunk_bytes,
                    sha256=known,
                )

            return send

        await _runs(
            "unthrottled, sender hashes first", args.runs, store_dir, sender(None, None), None
        )
        await _runs("unthrottled, sha256 known", args.runs, store_dir, sender(None, sha256), None)
        for rate_gbps in args.rates_gbps:
            rate_bytes_per_s = rate_gbps * 1e9 / 8
            await _runs(
                f"throttled {rate_gbps:g} Gbit/s, sha256 known",
                args.runs,
                store_dir,
                sender(rate_bytes_per_s, sha256),
                rate_bytes_per_s,
            )
    _clear(store_dir)


async def _in_process(args: argparse.Namespace, source: Path, sha256: str, store_dir: Path) -> None:
    batch_bytes = int(args.batch_mib * 1024 * 1024)
    runner, url = await _start_receiver(
        store_dir, batch_bytes, not args.no_fsync, not args.no_direct_io
    )
    try:
        await _measure(args, source, sha256, url, store_dir)
    finally:
        await runner.cleanup()


def _separate_process(args: argparse.Namespace, source: Path, sha256: str, store_dir: Path) -> None:
    batch_bytes = int(args.batch_mib * 1024 * 1024)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_receiver_process,
        args=(str(store_dir), batch_bytes, not args.no_fsync, not args.no_direct_io, child),
    )
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the receiver did not start within 30 s")
        url = parent.recv()
        asyncio.run(_measure(args, source, sha256, url, store_dir))
    finally:
        parent.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size [GB]")
    parser.add_argument(
        "--rates-gbps",
        type=lambda text: [float(part) for part in text.split(",") if part],
        default=[1.0, 2.0],
        help="throttled rates, comma-separated [Gbit/s]",
    )
    parser.add_argument(
        "--chunk-mib",
        type=float,
        default=DEFAULT_CHUNK_BYTES / 1024 / 1024,
        help="bytes per file read at the sender [MiB]",
    )
    parser.add_argument(
        "--batch-mib",
        type=float,
        default=DEFAULT_BATCH_BYTES / 1024 / 1024,
        help="bytes per disk write at the receiver [MiB]",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each case (median printed)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="also measure with sender and receiver in one loop",
    )
    parser.add_argument("--no-fsync", action="store_true", help="receiver skips the final fsync")
    parser.add_argument(
        "--no-direct-io", action="store_true", help="receiver writes through the page cache"
    )
    args = parser.parse_args(argv)
    size_bytes = int(args.size_gb * 1e9)
    parent_dir = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    free_bytes = shutil.disk_usage(parent_dir).free
    needed_bytes = 2 * size_bytes + _SPARE_BYTES
    if free_bytes < needed_bytes:
        print(
            f"not enough free space in {parent_dir}: {free_bytes / 1e9:.1f} GB free, "
            f"{needed_bytes / 1e9:.1f} GB needed (the file and its received copy); "
            "use a smaller --size-gb or another --dir",
            file=sys.stderr,
        )
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-transfer-", dir=parent_dir) as tmp:
        source = Path(tmp) / "checkpoint.bin"
        store_dir = Path(tmp) / "received"
        store_dir.mkdir()
        print(
            f"checkpoint {size_bytes / 1e9:g} GB of random bytes in {tmp} "
            f"({free_bytes / 1e9:.0f} GB were free); reads {args.chunk_mib:g} MiB, "
            f"writes {args.batch_mib:g} MiB; "
            f"{os.cpu_count()} CPUs; receiver fsync {'off' if args.no_fsync else 'on'}, "
            f"O_DIRECT {'off' if args.no_direct_io else 'on'}",
            flush=True,
        )
        _write_random(source, size_bytes)
        os.sync()  # the new file's writeback must not slow the first run down
        started = time.perf_counter()
        sha256 = file_sha256(source)
        hash_s = time.perf_counter() - started
        print(f"  {'sha256 alone (sender side)':<34} {size_bytes / hash_s / 1e9:6.3f} GB/s")
        print("receiver in a separate process:", flush=True)
        _separate_process(args, source, sha256, store_dir)
        if args.in_process:
            print("receiver in the sender's event loop:", flush=True)
            asyncio.run(_in_process(args, source, sha256, store_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
