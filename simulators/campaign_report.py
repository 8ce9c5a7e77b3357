"""A campaign's result as a printed table and as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulators.campaign import CampaignResult, run_summary


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def format_result(result: CampaignResult) -> str:
    """The figures as aligned lines, then one line per event."""
    summary = run_summary(result)
    s = result.scores
    lines = [
        f"campaign: {summary['days']:g} simulated days from {result.start_at:%Y-%m-%d} UTC, "
        f"{summary['sites']} sites, seed {result.config.seed}: {result.wall_s:.0f} s wall",
        "",
        f"  events issued                      {s.events_issued}",
        f"  modifications / cancellations sent {summary['modifications']} / "
        f"{summary['cancellations']}",
        f"  overlapping event pairs            {result.overlapping_pairs}",
        f"  opted in / opted out / unanswered  {s.opted_in} / {s.opted_out} / {s.unanswered}",
        f"  nothing requested (cancelled early) {s.nothing_requested}",
        f"  opted-in events delivering >= 90 % {s.delivered_90} of "
        f"{s.opted_in - s.unmeasured - _asked_none(result)} ({_pct(s.delivered_90_share)})",
        f"  requested energy delivered (opted in) {s.credited_kwh:.1f} of "
        f"{s.requested_kwh:.1f} kWh ({_pct(s.energy_share)}; net {s.delivered_kwh:.1f} kWh)",
        f"  opted-out events deliverable (est.) {s.opted_out_deliverable} of "
        f"{s.opted_out_estimated}",
        f"  rounds / plan rounds               {result.stats.rounds} / {result.stats.plan_rounds}",
        f"  invariant checks / breaks          {result.stats.invariant_checks} / "
        f"{len(result.stats.violations)}",
        f"  answers awaited / wall timeouts    {result.stats.answers_awaited} / "
        f"{len(result.stats.answer_timeouts)} (median {summary['answer_median_s']:.2f} s)",
        f"  jobs arrived / fit nowhere         {result.stats.jobs_arrived} / "
        f"{result.stats.jobs_rejected}",
        f"  migrations                         {_states(result.migrations)}",
        f"  jobs not at exactly one site       {len(result.jobs_not_at_one_site)}",
        f"  duplicate ledger intervals         {result.ledger_duplicates}",
        f"  answers to a version sent again    {result.repeated_answers} (changes of plan, "
        "redistributions: rules 12, 62)",
        "",
        "  event     kind    opt     sites  requested kWh  delivered kWh  ratio  predicted kW",
    ]
    for e in s.events:
        ratio = "-" if e.ratio is None else f"{e.ratio:5.2f}"
        delivered = "-" if e.delivered_kwh is None else f"{e.delivered_kwh:13.1f}"
        predicted = "-" if e.predicted_kw is None else f"{e.predicted_kw:12.1f}"
        lines.append(
            f"  {e.event_id:<9} {e.kind or '-':<7} {e.opt or '-':<7} {e.sites:5d}  "
            f"{e.requested_kwh:13.1f}  {delivered:>13}  {ratio:>5}  {predicted:>12}"
        )
    return "\n".join(lines) + "\n"


def _asked_none(result: CampaignResult) -> int:
    return sum(1 for e in result.scores.events if e.opt == "optIn" and e.requested_kwh <= 0)


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def result_json(result: CampaignResult) -> dict[str, Any]:
    """Everything of the result that JSON holds (times as ISO 8601)."""
    stats = asdict(result.stats)
    stats["messages_sent"] = dict(result.stats.messages_sent)  # asdict mangles a Counter
    latencies = stats.pop("answer_wall_s")
    stats["answer_wall_s_median"] = statistics.median(latencies) if latencies else None
    stats["answer_wall_s_max"] = max(latencies) if latencies else None
    return {
        "summary": run_summary(result),
        "config": result.config.model_dump(mode="json"),
        "start_at": result.start_at.isoformat(),
        "wall_s": result.wall_s,
        "overlapping_pairs": result.overlapping_pairs,
        "stats": stats,
        "scores": asdict(result.scores),
        "migrations": result.migrations,
        "jobs_not_at_one_site": result.jobs_not_at_one_site,
        "ledger_duplicates": result.ledger_duplicates,
        "repeated_answers": result.repeated_answers,
        "events": [asdict(e) for e in result.events],
    }


def write_json(result: CampaignResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result_json(result), indent=2, default=str) + "\n")
