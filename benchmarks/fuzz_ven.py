"""Benchmark: a running ``dr-gateway run`` daemon under a stream of mutated OpenADR payloads.

Run: .venv/bin/python -m benchmarks.fuzz_ven [--payloads N] [--vtns N] [--seed S]
     [--forms LIST] [--max-s S] [--keep] [--json]

Starts a real daemon process (its own temporary configuration and SQLite database, the
dashboard on a free loopback port) against ``--vtns`` scripted VTNs on loopback
(:class:`simulators.scripted_vtn.ScriptedVtn`, each asking for a 1 s poll, each with one
simulated site controller). Each poll of the VEN is answered with the next payload of a seeded
mutator (:class:`Mutator`): field mutations of valid distributions (extreme dates, huge, zero
and negative durations, thousands of intervals, 60-digit uids, ids with XML metacharacters or
non-ASCII letters, missing and duplicated elements, wrong message types, truncated XML, empty
bodies, 100-event distributions, an oversize body) and the XML forms (internal entity,
external entity, billion laughs, a DOCTYPE alone), sent as raw bytes. A VTN answers 1 poll per
second (openleadr takes whole seconds), so 2,000 payloads within the time need several VTNs.

Before the stream each VTN distributes one valid 100-event distribution (the warm-up; RSS
"start" is read after it, RSS "registered" before). After it, each VTN distributes valid
events and the benchmark checks their answers: a new event answered with code 200 (the
planner's opt), an event with a signal no programme maps answered optOut 460, the first
one's cancellation answered optIn 200, each under the requestID of its distribution.

Prints the payloads sent by form, the wall time, whether the daemon is alive (or the signal it
died of, with the forms served last), the ``Traceback`` lines in its log, its RSS at start and
end (``/proc/PID/status`` VmRSS), the largest gap between two polls at each VTN, the
``/healthz`` latencies, and the valid-after check per VTN. Targets (issue 12): 0 crashes,
0 tracebacks, every check answered correctly, RSS growth under 20 MB, no poll gap over 3 s.

``--forms`` picks the forms: a comma list of names, ``all`` or ``entities`` (the four XML
entity/DTD forms); a name with a leading ``-`` is left out (``--forms=all,-entities``).
Nothing is downloaded; the daemon and every server are stopped on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from openleadr import utils as openleadr_utils
from openleadr.messaging import TEMPLATES

from gateway.clock import SystemClock
from simulators.scripted_vtn import ScriptedVtn, event_dict
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace

ENTITY_FORMS = ("internal-entity", "external-entity", "billion-laughs", "doctype")
FIELD_FORMS = (
    "far-date",
    "extreme-date",
    "huge-duration",
    "zero-duration",
    "negative-duration",
    "many-intervals",
    "long-uid",
    "id-metachars",
    "id-non-ascii",
    "missing-element",
    "duplicate-element",
    "empty-body",
    "wrong-type",
    "truncated",
    "events-100",
    "oversize",
)
FORMS = FIELD_FORMS + ENTITY_FORMS
WEIGHTS = {"events-100": 0.5, "many-intervals": 0.5, "oversize": 0.25}
"""Relative frequency of the costly forms; every other form weighs 1."""

POLL_S = 1
OVERSIZE_BYTES = 4 * 1024 * 1024
MANY_INTERVALS = 3000
BULK_EVENTS = 100
HEALTHZ_EVERY_S = 0.5
HEALTHZ_TIMEOUT_S = 10.0
CHECK_GUARD_S = 60.0
"""Hang guard for one valid-after answer [s]; a healthy daemon answers within a few polls."""
HUNG_AFTER_S = 30.0
"""A payload still not fetched this long after ``--max-s`` ends the run: the daemon hangs."""
SIGNAL_UNKNOWN = "x-fuzz-unknown-signal"
TOKEN = "fuzz-benchmark-token-0123456789"

_DATE_TIME = re.compile(r"(<(?:xcal:)?date-time>)[^<]*(</(?:xcal:)?date-time>)")
_DURATION = re.compile(r"(<(?:xcal:)?duration>)(-?P[^<]*)(</(?:xcal:)?duration>)")
_UID = re.compile(r"(<uid xmlns=\"urn:ietf:params:xml:ns:icalendar-2.0\">\s*<text>)\d+(</text>)")
_ELEMENTS = (
    "ei:eventID",
    "ei:modificationNumber",
    "ei:eiActivePeriod",
    "ei:eiEventSignals",
    "ei:vtnID",
    "ei:createdDateTime",
    "ei:eventStatus",
    "ei:eiTarget",
    "oadr:oadrResponseRequired",
)


def parse_forms(text: str) -> list[str]:
    """The forms of ``--forms``: names, ``all``, ``entities``; ``-name`` leaves one out."""
    chosen: list[str] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        name = raw.lstrip("-")
        names = FORMS if name == "all" else ENTITY_FORMS if name == "entities" else (name,)
        unknown = [n for n in names if n not in FORMS]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"--forms: unknown form {unknown[0]!r}; expected all, entities or one of "
                + ", ".join(FORMS)
            )
        if raw.startswith("-"):
            chosen = [n for n in chosen if n not in names]
        else:
            chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise argparse.ArgumentTypeError("--forms: no form left")
    return chosen


class Mutator:
    """Seeded hostile poll answers for one VTN, each one of ``forms``."""

    def __init__(self, rng: random.Random, vtn_id: str, forms: Sequence[str]) -> None:
        self._rng = rng
        self._vtn_id = vtn_id
        self._forms = list(forms)
        self._weights = [WEIGHTS.get(f, 1.0) for f in self._forms]
        self._bulk_version = 0
        self._serial = 0

    def next(self) -> tuple[str, bytes]:
        form = self._rng.choices(self._forms, self._weights)[0]
        return form, self.payload(form)

    def payload(self, form: str) -> bytes:
        rng = self._rng
        if form == "empty-body":
            return rng.choice([b"", b" ", b"\n\n"])
        if form == "events-100":
            self._bulk_version += 1
            events = [
                self._event(f"BULK-{i}", modification_number=self._bulk_version)
                for i in range(BULK_EVENTS)
            ]
            return self._render(events).encode()
        if form == "many-intervals":
            count = rng.randint(MANY_INTERVALS // 2, MANY_INTERVALS)
            event = self._event(
                self._pool_id(),
                duration=timedelta(seconds=count),
                intervals=[(timedelta(seconds=1), 1.0)] * count,
            )
            return self._render([event]).encode()
        if form == "id-metachars":
            raw_id = rng.choice(["<ev&1>\"'", "]]>ev", "a&amp;b<c/>", "ev\t\r\n<>&"]) + str(
                self._serial_no()
            )
            return self._render([self._event(escape(raw_id, {'"': "&quot;"}))]).encode()
        if form == "id-non-ascii":
            raw_id = rng.choice(["événement-Ω", "事件-日本", "ev-\u202e-rtl", "ev-\U0001f50c"])
            return self._render([self._event(f"{raw_id}-{self._serial_no()}")]).encode()
        if form == "oversize":
            event = self._event(self._pool_id())
            event["event_descriptor"]["vtn_comment"] = "x" * OVERSIZE_BYTES
            return self._render([event]).encode()
        text = self._render(self._events(rng.randint(1, 3)))
        if form == "far-date":
            text = _DATE_TIME.sub(r"\g<1>9999-12-31T23:59:59Z\g<2>", text, count=rng.randint(1, 3))
        elif form == "extreme-date":
            value = rng.choice(
                ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2262-04-12T00:00:00Z"]
            )
            text = _DATE_TIME.sub(rf"\g<1>{value}\g<2>", text)
        elif form in ("huge-duration", "zero-duration", "negative-duration"):
            value = {
                "huge-duration": rng.choice(
                    ["P999999999D", "P99999999W", "PT99999999999999S", "P9999Y", "P1000000000D"]
                ),
                "zero-duration": "PT0S",
                "negative-duration": rng.choice(["-PT1H", "-P1D", "-PT1S"]),
            }[form]
            text = _DURATION.sub(rf"\g<1>{value}\g<3>", text, count=rng.randint(1, 4))
        elif form == "long-uid":
            digits = "".join(rng.choice("0123456789") for _ in range(60))
            text = _UID.sub(rf"\g<1>{digits}\g<2>", text)
        elif form == "missing-element":
            name = rng.choice(_ELEMENTS)
            text = re.sub(rf"<{name}\b.*?</{name}>", "", text, count=1, flags=re.S)
        elif form == "duplicate-element":
            name = rng.choice(
                ("ei:eventDescriptor", "ei:eiActivePeriod", "ei:eiEventSignal", "oadr:oadrEvent")
            )
            text = re.sub(rf"(<{name}\b.*?</{name}>)", r"\1\1", text, count=1, flags=re.S)
        elif form == "wrong-type":
            other = rng.choice(
                ["oadrCreatedEvent", "oadrRegisterReport", "oadrPollX", "oadrResponse"]
            )
            text = text.replace("oadrDistributeEvent", other)
        elif form == "truncated":
            text = text[: rng.randint(1, len(text) - 1)]
        elif form in ENTITY_FORMS:
            text = self._entity(form, text)
        return text.encode()

    # -- building blocks -------------------------------------------------------------------

    def _serial_no(self) -> int:
        self._serial += 1
        return self._serial

    def _pool_id(self) -> str:
        return f"FUZZ-{self._rng.randrange(30)}"

    def _events(self, count: int) -> list[dict[str, Any]]:
        return [self._event(self._pool_id()) for _ in range(count)]

    def _event(
        self,
        event_id: str,
        *,
        modification_number: int | None = None,
        duration: timedelta = timedelta(hours=1),
        intervals: Sequence[tuple[timedelta, float]] = ((timedelta(hours=1), 1.0),),
    ) -> dict[str, Any]:
        rng = self._rng
        return event_dict(
            event_id,
            start_at=datetime.now(UTC) + timedelta(minutes=rng.randint(5, 600)),
            modification_number=(
                rng.randint(0, 4) if modification_number is None else modification_number
            ),
            duration=duration,
            intervals=intervals,
            signal_name=rng.choice(["SIMPLE", "SIMPLE", "ELECTRICITY_PRICE", "LOAD_DISPATCH"]),
            test_event=rng.random() < 0.2,
        )

    def _render(self, events: Sequence[Mapping[str, Any]]) -> str:
        request_id = f"fuzz-{self._serial_no()}"
        body = TEMPLATES.get_template("oadrDistributeEvent.xml").render(
            events=events,
            request_id=request_id,
            vtn_id=self._vtn_id,
            response={"response_code": 200, "response_description": "OK", "request_id": None},
        )
        return str(
            TEMPLATES.get_template("oadrPayload.xml").render(
                template="oadrDistributeEvent",
                signature=None,
                signed_object=openleadr_utils.flatten_xml(body),
            )
        )

    def _entity(self, form: str, text: str) -> str:
        declaration, _, rest = text.partition("\n")
        if form == "doctype":
            return f"{declaration}\n<!DOCTYPE oadr:oadrPayload>\n{rest}"
        if form == "internal-entity":
            dtd = '<!DOCTYPE oadr:oadrPayload [<!ENTITY a "x">]>'
            ref = "&a;"
        elif form == "external-entity":
            dtd = '<!DOCTYPE oadr:oadrPayload [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
            ref = "&xxe;"
        else:  # billion laughs
            levels = ['<!ENTITY l0 "lol">'] + [
                f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
            ]
            dtd = f"<!DOCTYPE oadr:oadrPayload [{''.join(levels)}]>"
            ref = "&l9;"
        rest = re.sub(r"(<ei:eventID>)[^<]*(</ei:eventID>)", rf"\g<1>{ref}\g<2>", rest, count=1)
        return f"{declaration}\n{dtd}\n{rest}"


# -- the rig ----------------------------------------------------------------------------------


@dataclass
class Utility:
    """One VTN of the rig, its site and what the benchmark saw of it."""

    name: str
    vtn: ScriptedVtn
    mutator: Mutator
    site_runner: web.AppRunner
    polls_at: list[float] = field(default_factory=list)
    answered_with: list[str] = field(default_factory=list)
    """The form each poll was answered with ("-" when nothing hostile was queued)."""
    queued_form: str = "-"
    sent: Counter[str] = field(default_factory=Counter)
    served_last: list[tuple[float, str]] = field(default_factory=list)
    check: str = "not run"


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    log_path: Path
    web_url: str

    def rss_mb(self, key: str = "VmRSS") -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll_recorder(utility: Utility) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/OadrPoll"):
            utility.polls_at.append(time.monotonic())
            raw = bool(utility.vtn.queue) and isinstance(utility.vtn.queue[0], bytes)
            utility.answered_with.append(utility.queued_form if raw else "-")
        return await handler(request)

    return record


def _config(tmp: Path, utilities: Sequence[Utility], sites: Sequence[dict[str, Any]]) -> Path:
    lines = [
        "[database]",
        f'url = "sqlite:///{tmp / "gateway.db"}"',
        "",
        "[scheduler]",
        "poll_interval_s = 5",
        "plan_interval_s = 10",
        "",
        "[web]",
        "enabled = true",
        'host = "127.0.0.1"',
        f"port = {_free_port()}",
        f'token = "{TOKEN}"',
    ]
    for utility in utilities:
        lines += [
            "",
            "[[vtn]]",
            f'id = "{utility.name}"',
            f'url = "{utility.vtn.url}"',
            'ven_name = "dr-gateway-fuzz"',
            "report_interval_s = 60",
            # A hostile answer is a failed poll; the benchmark measures stalls, not the
            # designed rebuild after an outage (3 failed polls by default).
            "outage_after_failures = 100",
            "reconnect_initial_s = 0.5",
            "reconnect_max_s = 2",
            "request_timeout_s = 5",
        ]
    for site in sites:
        lines += ["", "[[site]]"] + [f"{key} = {json.dumps(value)}" for key, value in site.items()]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _start_daemon(config: Path, log_path: Path) -> Daemon:
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
        stdout=log, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )  # fmt: skip
    log.close()
    atexit.register(_kill_quietly, process.pid)
    port = re.search(r"port = (\d+)", config.read_text())
    assert port is not None
    return Daemon(process, log_path, f"http://127.0.0.1:{port.group(1)}")


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


async def _until(
    condition: Callable[[], object], guard_s: float, what: str, daemon: Daemon
) -> None:
    deadline = time.monotonic() + guard_s
    while not condition():
        if daemon.process.returncode is not None:
            raise RuntimeError(
                f"the daemon exited ({daemon.process.returncode}) waiting for {what}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {guard_s} s")
        await asyncio.sleep(0.05)


async def _probe_healthz(daemon: Daemon, latencies_s: list[float], failures: list[str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=HEALTHZ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            started = time.monotonic()
            try:
                async with http.get(f"{daemon.web_url}/healthz", headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures.append(f"HTTP {response.status}")
                latencies_s.append(time.monotonic() - started)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if daemon.process.returncode is not None:
                    return
                failures.append(type(exc).__name__)
                latencies_s.append(time.monotonic() - started)
            await asyncio.sleep(HEALTHZ_EVERY_S)


async def _feed(utility: Utility, quota: int, end_at: float, daemon: Daemon) -> None:
    """Answer the VTN's polls with hostile payloads, one queued at a time."""
    pending: str | None = None
    while True:
        if pending is not None and (
            time.monotonic() > end_at + HUNG_AFTER_S or daemon.process.returncode is not None
        ):
            return  # never fetched: the daemon died or hangs (the poll gaps say which VTN)
        if not utility.vtn.queue and pending is not None:
            utility.sent[pending] += 1
            utility.served_last = [*utility.served_last, (time.monotonic(), pending)][-3:]
            pending = None
        if pending is None:
            if sum(utility.sent.values()) >= quota or time.monotonic() > end_at:
                return
            if daemon.process.returncode is not None:
                return
            # Rendering thousands of intervals takes a while: not on the loop that answers
            # the polls (and records their instants).
            pending, payload = await asyncio.to_thread(utility.mutator.next)
            utility.queued_form = pending
            utility.vtn.send_raw(payload)
        await asyncio.sleep(0.02)


async def _warm_up(utilities: Sequence[Utility], daemon: Daemon) -> None:
    """One valid 100-event distribution per VTN, answered, before RSS is first read: the
    daemon's one-time allocations (statement caches, schema, templates) are not growth."""
    start_at = datetime.now(UTC) + timedelta(hours=3)
    for utility in utilities:
        utility.vtn.distribute(
            [event_dict(f"WARM-{i}", start_at=start_at) for i in range(BULK_EVENTS)]
        )
    await _until(
        lambda: all(len(u.vtn.responses) >= BULK_EVENTS for u in utilities),
        CHECK_GUARD_S,
        "the warm-up answered",
        daemon,
    )


async def _check_into(utility: Utility, daemon: Daemon) -> None:
    try:
        utility.check = await _check(utility, daemon)
    except (TimeoutError, RuntimeError) as exc:
        utility.check = f"failed: {exc}"


async def _check(utility: Utility, daemon: Daemon) -> str:
    """Valid events after the stream: the answers and their requestIDs; "ok" or what failed."""
    vtn = utility.vtn
    vtn.queue.clear()
    start_at = datetime.now(UTC) + timedelta(hours=2)
    new_id, unknown_id = f"CHECK-{utility.name}", f"CHECK-{utility.name}-X"
    new = event_dict(new_id, start_at=start_at)
    unknown = event_dict(unknown_id, start_at=start_at, signal_name=SIGNAL_UNKNOWN)
    cancelled = event_dict(new_id, start_at=start_at, modification_number=1, status="cancelled")
    problems = []
    for events, expected in (
        ([new, unknown], {new_id: (0, None, 200), unknown_id: (0, "optOut", 460)}),
        ([cancelled, unknown], {new_id: (1, "optIn", 200), unknown_id: (0, "optOut", 460)}),
    ):
        sent_before = len(vtn.distributions)
        vtn.distribute(events)
        await _until(
            lambda n=sent_before: len(vtn.distributions) > n,
            CHECK_GUARD_S,
            "the check sent",
            daemon,
        )
        request_id = vtn.distributions[sent_before].request_id

        def answered(request_id: str = request_id) -> dict[str, Any]:
            return {r.event_id: r for r in vtn.responses if r.request_id == request_id}

        await _until(
            lambda ids=tuple(expected): all(i in answered() for i in ids),
            CHECK_GUARD_S,
            f"{utility.name}'s answers to {request_id}",
            daemon,
        )
        got = answered()
        for event_id, (number, opt, code) in expected.items():
            r = got[event_id]
            if (
                r.modification_number != number
                or r.response_code != code
                or (opt is not None and r.opt_type != opt)
                or r.opt_type not in ("optIn", "optOut")
            ):
                problems.append(
                    f"{event_id}#{number}: {r.opt_type} {r.response_code} (expected "
                    f"{opt or 'optIn/optOut'} {code})"
                )
    return "ok" if not problems else "; ".join(problems)


def _largest_gap(utility: Utility, since: float) -> tuple[float, str]:
    """The largest gap between two polls after ``since`` [s], and the form the poll that
    opened it was answered with."""
    polls = [(t, f) for t, f in zip(utility.polls_at, utility.answered_with, strict=True)]
    later = [(t, f) for t, f in polls if t >= since]
    gaps = [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(later)]
    return max(gaps, default=(float("nan"), "-"))


def _tracebacks(log_path: Path) -> tuple[int, list[str]]:
    lines = log_path.read_text(errors="replace").splitlines()
    count = sum("Traceback" in line for line in lines)
    last_lines = []
    for i, line in enumerate(lines):
        if "Traceback" in line:
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or lines[j] == ""):
                j += 1
            if j < len(lines):
                last_lines.append(lines[j][:160])
    return count, last_lines


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM (and SIGINT, as asyncio.run does) cancels the run: the finally below stops the
    # daemon and the servers.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    rng = random.Random(args.seed)
    clock = SystemClock()
    utilities: list[Utility] = []
    sites: list[dict[str, Any]] = []
    daemon: Daemon | None = None
    probe: asyncio.Task[None] | None = None
    try:
        for i in range(args.vtns):
            name = f"utility-{i}"
            vtn = ScriptedVtn(f"FUZZ-VTN-{i}", poll_interval_s=POLL_S)
            utility = Utility(
                name,
                vtn,
                Mutator(random.Random(rng.random()), vtn.vtn_id, args.forms),
                site_runner=None,  # type: ignore[arg-type]  # set below
            )
            vtn.server.app.middlewares.insert(0, _poll_recorder(utility))
            await vtn.start()
            token = f"token-of-site-{i}-0123456789"
            site = SimulatedSite(
                site_id=f"site-{i}",
                token=token,
                clock=clock,
                trace=RenewableTrace.constant(5.0),
                gpus_total=8,
                it_power_max_kw=6.0,
            )
            utility.site_runner, site_url = await start_site_server(site)
            utilities.append(utility)
            sites.append(
                {
                    "id": f"site-{i}",
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "wan_bandwidth_gbps": 1.0,
                    "controller_url": site_url,
                    "controller_token": token,
                    "vtn": name,
                }
            )
        config = _config(tmp, utilities, sites)
        daemon = await _start_daemon(config, tmp / "daemon.log")
        await _until(
            lambda: all(u.vtn.registrations and len(u.polls_at) >= 2 for u in utilities),
            120,
            "every VTN registered and polled",
            daemon,
        )
        rss_launch = daemon.rss_mb()
        await _warm_up(utilities, daemon)
        await asyncio.sleep(args.settle_s)
        rss_start = daemon.rss_mb()
        latencies_s: list[float] = []
        healthz_failures: list[str] = []
        probe = asyncio.create_task(_probe_healthz(daemon, latencies_s, healthz_failures))
        started = time.monotonic()
        quota = -(-args.payloads // args.vtns)
        await asyncio.gather(*(_feed(u, quota, started + args.max_s, daemon) for u in utilities))
        fuzz_s = time.monotonic() - started
        alive = daemon.process.returncode is None
        if alive:
            await asyncio.gather(*(_check_into(u, daemon) for u in utilities))
        else:
            for utility in utilities:
                utility.check = "not run: the daemon died"
        await asyncio.sleep(1.0)
        rss_end = daemon.rss_mb()
        rss_peak = daemon.rss_mb("VmHWM")
        wall_s = time.monotonic() - started
        returncode = daemon.process.returncode
        tracebacks, traceback_ends = _tracebacks(daemon.log_path)
        sent: Counter[str] = Counter()
        for utility in utilities:
            sent += utility.sent
        suspects = sorted(
            ((at, u.name, form) for u in utilities for at, form in u.served_last), reverse=True
        )[:4]
        return {
            "payloads_sent": sum(sent.values()),
            "payloads_by_form": dict(sorted(sent.items())),
            "forms": args.forms,
            "vtns": args.vtns,
            "seed": args.seed,
            "fuzz_wall_s": round(fuzz_s, 1),
            "wall_s": round(wall_s, 1),
            "daemon_alive": alive and returncode is None,
            "daemon_exit": None
            if returncode is None
            else (f"signal {signal.Signals(-returncode).name}" if returncode < 0 else returncode),
            "served_last_before_exit": None
            if returncode is None
            else [f"{name}: {form}" for _, name, form in suspects],
            "tracebacks": tracebacks,
            "traceback_ends": traceback_ends[:10],
            "log_lines": len(daemon.log_path.read_text(errors="replace").splitlines()),
            "rss_launch_mb": None if rss_launch is None else round(rss_launch, 1),
            "rss_start_mb": None if rss_start is None else round(rss_start, 1),
            "rss_end_mb": None if rss_end is None else round(rss_end, 1),
            "rss_growth_mb": None
            if rss_start is None or rss_end is None
            else round(rss_end - rss_start, 1),
            "rss_peak_mb": None if rss_peak is None else round(rss_peak, 1),
            "largest_poll_gap_s": {
                u.name: round(_largest_gap(u, started)[0], 2) for u in utilities
            },
            "largest_poll_gap_after": {u.name: _largest_gap(u, started)[1] for u in utilities},
            "healthz_probes": len(latencies_s),
            "healthz_max_s": round(max(latencies_s), 3) if latencies_s else None,
            "healthz_median_s": round(statistics.median(latencies_s), 3) if latencies_s else None,
            "healthz_failures": Counter(healthz_failures),
            "valid_after": {u.name: u.check for u in utilities},
        }
    finally:
        if probe is not None:
            probe.cancel()
        if daemon is not None:
            await _stop(daemon.process)
        for utility in utilities:
            await utility.vtn.stop()
            if utility.site_runner is not None:
                await utility.site_runner.cleanup()


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


def _print(result: Mapping[str, Any]) -> None:
    print(
        f"payloads sent: {result['payloads_sent']} to {result['vtns']} VTNs (seed {result['seed']})"
    )
    for form, count in result["payloads_by_form"].items():
        print(f"  {form:<18} {count}")
    print(f"wall time: {result['fuzz_wall_s']} s of payloads, {result['wall_s']} s with the checks")
    if result["daemon_alive"]:
        print("daemon alive: yes")
    else:
        print(
            f"daemon alive: NO, exit {result['daemon_exit']}; forms served last: "
            + ", ".join(result["served_last_before_exit"] or [])
        )
    print(f"tracebacks in the daemon's log: {result['tracebacks']} ({result['log_lines']} lines)")
    for end in result["traceback_ends"]:
        print(f"  {end}")
    print(
        f"RSS: {result['rss_launch_mb']} MB registered, start (after the warm-up) "
        f"{result['rss_start_mb']} MB, end {result['rss_end_mb']} MB, growth "
        f"{result['rss_growth_mb']} MB (peak {result['rss_peak_mb']} MB)"
    )
    gaps = result["largest_poll_gap_s"]
    print(
        "largest poll gap per VTN [s] (after the form answered): "
        + ", ".join(f"{k} {v} ({result['largest_poll_gap_after'][k]})" for k, v in gaps.items())
    )
    print(
        f"/healthz: {result['healthz_probes']} probes, max {result['healthz_max_s']} s, median "
        f"{result['healthz_median_s']} s, failures {dict(result['healthz_failures']) or 0}"
    )
    for name, check in result["valid_after"].items():
        print(f"valid events afterwards at {name}: {check}")
    targets = {
        "0 crashes": result["daemon_alive"],
        "0 tracebacks": result["tracebacks"] == 0,
        "every valid event answered correctly": all(
            c == "ok" for c in result["valid_after"].values()
        ),
        "RSS growth < 20 MB": result["rss_growth_mb"] is not None and result["rss_growth_mb"] < 20,
        "no poll gap over 3 s": all(g <= 3.0 for g in gaps.values()),
    }
    for target, met in targets.items():
        print(f"target {target}: {'met' if met else 'NOT met'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fuzz_ven",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--payloads", type=int, default=2000, help="payloads in all (2000)")
    parser.add_argument("--vtns", type=int, default=8, help="VTNs, each polled each second (8)")
    parser.add_argument("--seed", type=int, default=12, help="the mutator's seed (12)")
    parser.add_argument(
        "--forms",
        type=parse_forms,
        default=list(FORMS),
        help="forms: names, 'all', 'entities'; '-name' leaves one out, e.g. all,-entities",
    )
    parser.add_argument(
        "--max-s", type=float, default=330.0, help="longest time for the payloads [s] (330)"
    )
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="wait after start before RSS is read [s]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (log, database)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.vtns < 2:
        build_parser().error("--vtns: at least 2")
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-ven-"))
    try:
        result = asyncio.run(run(args, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the daemon and the servers are stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
