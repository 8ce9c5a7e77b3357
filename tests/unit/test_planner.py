"""The planner's pure parts: windows, signal mapping, the feasibility-aware policy, opt answers."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from gateway.planner import opt
from gateway.planner.arrays import prefix_min, windows_s
from gateway.planner.plan import fleet_arrays, plan
from gateway.planner.policies import choose_shed_jobs
from gateway.planner.signals import peak_requests, requests_at
from gateway.planner.snapshot import SiteRequest, Snapshot
from gateway.planner.timing import absorb_departures
from tests.support.planning import NOW, PARAMS, SIGNALS, event, fleet_for_opt, job, site


def test_window_is_contiguous_cover_from_now() -> None:
    supply = np.array([[5.0, 5.0, 1.0, 5.0], [0.0, 5.0, 5.0, 5.0], [5.0] * 4])
    need_kw = 2.0  # as headroom: supply minus the site's load
    got = [float(windows_s(prefix_min(row - need_kw), np.zeros(1), 900.0)[0]) for row in supply]
    assert got == [1800.0, 0.0, 3600.0]
    # Larger jobs get shorter windows from the same running minimum.
    row = prefix_min(np.array([5.0, 4.0, 3.0, 1.0]))
    np.testing.assert_array_equal(
        windows_s(row, np.array([0.5, 3.0, 4.5, 6.0]), 900.0), [3600.0, 2700.0, 900.0, 0.0]
    )


SIGNAL_CASES = [
    ("SIMPLE level 2 sheds half the flexible load", "SIMPLE", "level", 2.0, "shed", 2.0),
    ("LOAD_DISPATCH delta -3 sheds 3 kW", "LOAD_DISPATCH", "delta", -3.0, "shed", 3.0),
    ("LOAD_DISPATCH delta +5 absorbs 5 kW", "LOAD_DISPATCH", "delta", 5.0, "absorb", 5.0),
    ("LOAD_DISPATCH setpoint caps", "LOAD_DISPATCH", "setpoint", 6.0, "cap", 6.0),
    ("negative price absorbs the headroom", "ELECTRICITY_PRICE", "price", -0.02, "absorb", 7.0),
    ("LOAD_CONTROL capacity caps at a share", "LOAD_CONTROL", "x-loadControlCapacity", 0.5,
     "cap", 5.5),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "name", "kind", "value", "ask", "kw"), SIGNAL_CASES, ids=[c[0] for c in SIGNAL_CASES]
)
def test_signal_mapping(
    label: str, name: str, kind: str, value: float, ask: str, kw: float
) -> None:
    sites = [site("a", 0.0, it_power_kw=4.0), site("b", 0.0)]
    requests = peak_requests(event(name, kind, (value,)), sites, {"a": 4.0}, SIGNALS)
    assert [(r.site_id, r.kind) for r in requests] == [("a", ask)]
    assert requests[0].power_kw == pytest.approx(kw)


def test_interval_in_force_comes_from_cumulative_durations() -> None:
    e = event(values=(-1.0, -2.0, -3.0), start_in_h=0.0, duration_h=3.0)
    sites = [site("a", 0.0)]
    at = NOW + timedelta(hours=1, minutes=30)
    assert requests_at(e, sites, {}, at, SIGNALS)[0].power_kw == 2.0
    assert requests_at(e, sites, {}, NOW + timedelta(hours=3), SIGNALS) == []
    assert requests_at(replace(e, test_event=True), sites, {}, at, SIGNALS) == []


def test_follows_the_green_into_a_feasible_window() -> None:
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=1.3), site("sunny", 10.0)),
        jobs=(job("j1", "dark"),),
    )
    [decision] = plan(snapshot, PARAMS)
    assert (decision.job_id, decision.source_site_id, decision.target_site_id) == (
        "j1", "dark", "sunny",
    )  # fmt: skip
    assert decision.expected_s == pytest.approx(5 / 0.6 + 8 * 5 / 9 + 5 / 1.5)


def test_no_move_outside_the_feasibility_domain() -> None:
    # 150 GB over 1 Gbit/s needs about 1700 s: a 4 h window (10 % = 1440 s) is too short.
    short = [10.0] * 16 + [0.0] * 32
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=4.0, bandwidth_gbps=1.0), site("sunny", short)),
        jobs=(job("big", "dark", gb=150.0, power_kw=4.0),),
    )
    assert plan(snapshot, PARAMS) == []
    longer = [10.0] * 48
    snapshot = replace(snapshot, sites=(snapshot.sites[0], site("sunny", longer)))
    assert len(plan(snapshot, PARAMS)) == 1


def test_hysteresis_and_capacity() -> None:
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=2.6), site("sunny", 10.0, gpus_free=2)),
        jobs=(job("new", "dark", age_h=0.5), job("old", "dark", age_h=3.0)),
    )
    decisions = plan(snapshot, PARAMS)
    assert [d.job_id for d in decisions] == ["old"]  # "new" arrived 30 min ago


def test_unmigratable_and_in_flight_jobs_stay() -> None:
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=2.6), site("sunny", 10.0)),
        jobs=(
            job("pinned", "dark", migratable=False),
            replace(job("moving", "dark"), in_flight=True),
        ),
    )
    assert plan(snapshot, PARAMS) == []


NET_JOB_KW = 1.3 - 2 * 0.11
"""What a 1.3 kW job on 2 GPUs takes off its site's meter: the GPUs it leaves draw idle power."""


def test_shed_request_moves_jobs_off_at_its_start_until_covered() -> None:
    start_at = NOW + timedelta(minutes=30)
    request = SiteRequest("a", "shed", 3.0, start_at, start_at + timedelta(hours=2), "vtn/e1")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 10.0, it_power_kw=5.2), site("b", 0.0), site("c", 0.0)),
        jobs=(job("j1", "a"), job("j2", "a"), job("j3", "a"), job("j4", "a")),
        requests=(request,),
    )
    # Half an hour ahead nothing moves: an early shed lowers the baseline the meter judges by.
    assert plan(snapshot, PARAMS) == []
    at_start = replace(snapshot, at=start_at)
    decisions = plan(at_start, PARAMS)
    # The ask plus the margin, in jobs' power less the idle draw they leave: 3.3 / 1.08 -> 4.
    assert len(decisions) == math.ceil(3.0 * (1 + PARAMS.delivery_margin) / NET_JOB_KW)
    assert all(d.source_site_id == "a" and d.event_ref == "vtn/e1" for d in decisions)
    # What earlier moves delivered counts.
    done = replace(at_start, delivered_kw={("vtn/e1", "a"): 2 * NET_JOB_KW})
    assert len(plan(done, PARAMS)) == 2


def test_absorb_moves_leave_so_that_jobs_run_at_the_start() -> None:
    start_at = NOW + timedelta(hours=1)
    request = SiteRequest("b", "absorb", 1.0, start_at, start_at + timedelta(hours=1), "vtn/e3")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 10.0, it_power_kw=1.3), site("b", 0.0)),
        jobs=(job("j1", "a", gb=5.0),),
        requests=(request,),
    )
    move_s = 5 / 0.6 + 8 * 5 / 9 + 5 / 1.5
    assert plan(snapshot, PARAMS) == []  # an hour ahead: too early
    [due_at] = absorb_departures(snapshot, PARAMS)
    assert due_at == start_at - timedelta(seconds=move_s)
    [decision] = plan(replace(snapshot, at=due_at), PARAMS)
    assert (decision.job_id, decision.target_site_id, decision.event_ref) == ("j1", "b", "vtn/e3")
    assert decision.reason.startswith("absorb for vtn/e3")


def test_guarded_sites_give_up_no_job_before_their_event() -> None:
    """A dark site would lose its job to a sunny one, but a shed starts there within the
    guard: the job stays until the shed moves it, so the baseline before the event holds."""
    start_at = NOW + timedelta(minutes=45)
    shed_later = SiteRequest("dark", "shed", 1.0, start_at, start_at + timedelta(hours=1), "v/e")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=1.3), site("sunny", 10.0)),
        jobs=(job("j1", "dark"),),
    )
    assert len(plan(snapshot, PARAMS)) == 1
    assert plan(replace(snapshot, requests=(shed_later,)), PARAMS) == []


def test_guarded_sites_take_no_job_before_their_event() -> None:
    """A sunny site would take the dark site's job, but an absorb starts there within the
    guard: a job arriving now would raise the baseline the absorb is judged against."""
    start_at = NOW + timedelta(minutes=45)
    absorb_later = SiteRequest(
        "sunny", "absorb", 0.5, start_at, start_at + timedelta(hours=1), "v/e"
    )
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=1.3), site("sunny", 10.0)),
        jobs=(job("j1", "dark"),),
        requests=(absorb_later,),
    )
    later = replace(PARAMS, absorb_early_s=0.0)
    assert plan(snapshot, later) == [], "not the policy's move, and not yet the absorb's"


def test_shedding_site_takes_no_new_jobs() -> None:
    request = SiteRequest("sunny", "shed", 1.0, NOW, NOW + timedelta(hours=2), "vtn/e1")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=1.3), site("sunny", 10.0)),
        jobs=(job("j1", "dark"),),
        requests=(request,),
    )
    assert plan(snapshot, PARAMS) == []


def test_absorb_request_counts_as_green_supply() -> None:
    request = SiteRequest("b", "absorb", 5.0, NOW, NOW + timedelta(hours=6), "vtn/e2")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 0.0, it_power_kw=1.3), site("b", 0.0)),
        jobs=(job("j1", "a"),),
    )
    assert plan(snapshot, PARAMS) == []
    [decision] = plan(replace(snapshot, requests=(request,)), PARAMS)
    assert decision.target_site_id == "b"


def test_opt_in_when_the_shed_is_deliverable() -> None:
    decision = opt.decide(event(values=(-3.0,)), fleet_for_opt(), PARAMS, SIGNALS)
    assert decision.opt == "optIn"
    # Jobs go until the ask plus the margin is covered: 4 x 1.08 kW at PUE 1.
    assert f"a: shed 3.0 kW asked, {4 * NET_JOB_KW:.1f} kW deliverable" in decision.reason
    assert decision.predicted_kw == pytest.approx(3.0 * (1 + PARAMS.delivery_margin))


def test_opt_out_when_the_prediction_covers_the_ask_but_not_its_margin() -> None:
    """Four jobs deliver 4 x 1.08 kW: enough for 3.4 kW plus the 25 % margin, not for 3.6 kW
    (4.5 kW with it), although 4.3 kW covers 3.6 kW alone."""
    deliverable_kw = 4 * NET_JOB_KW
    ask_ok_kw = deliverable_kw / (1 + PARAMS.delivery_margin) - 0.05
    ask_thin_kw = deliverable_kw - 0.7
    assert ask_thin_kw < deliverable_kw < ask_thin_kw * (1 + PARAMS.delivery_margin)
    fits = opt.decide(event(values=(-ask_ok_kw,)), fleet_for_opt(), PARAMS, SIGNALS)
    assert fits.opt == "optIn", fits.reason
    thin = opt.decide(event(values=(-ask_thin_kw,)), fleet_for_opt(), PARAMS, SIGNALS)
    assert thin.opt == "optOut", thin.reason
    assert f"{deliverable_kw:.1f} kW deliverable" in thin.reason


def test_opt_out_without_room_elsewhere() -> None:
    decision = opt.decide(event(values=(-3.0,)), fleet_for_opt(room_gpus=2), PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert f"{NET_JOB_KW:.1f} kW deliverable" in decision.reason
    assert decision.predicted_kw == pytest.approx(NET_JOB_KW)


def test_opt_counts_no_room_at_sites_other_events_guard() -> None:
    """b is the only room, but another opted-in event sheds at b while this one runs: b
    takes no job then, so the shed at a cannot be delivered."""
    e = event(values=(-1.0,), start_in_h=1.0, duration_h=2.0)
    other = SiteRequest(
        "b", "shed", 0.5, e.effective_start_at + timedelta(minutes=30), e.end_at, "vtn/other"
    )
    assert opt.decide(e, fleet_for_opt(), PARAMS, SIGNALS).opt == "optIn"
    busy = replace(fleet_for_opt(), requests=(other,))
    decision = opt.decide(e, busy, PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert "0.0 kW deliverable" in decision.reason


def test_opt_credits_what_the_meter_will_see_against_the_predicted_baseline() -> None:
    """The moves take 4 x 1.08 kW off a's 5.2 kW. Judged against a baseline of 5.2 kW (the
    load now) that covers a 3 kW shed; against a baseline 2 kW lower it does not."""
    e = event(values=(-3.0,))
    load_kw = fleet_for_opt().site("a").load_kw
    assert opt.decide(e, fleet_for_opt(), PARAMS, SIGNALS, {"a": load_kw}).opt == "optIn"
    decision = opt.decide(e, fleet_for_opt(), PARAMS, SIGNALS, {"a": load_kw - 2.0})
    assert decision.opt == "optOut"
    assert f"{4 * NET_JOB_KW - 2.0:.1f} kW deliverable" in decision.reason


def test_a_shed_in_force_holds_the_load_at_its_baseline_less_the_ask() -> None:
    """With the baseline known, what is left to shed is the load above baseline less the ask
    (the margin included), whatever moved before."""
    request = SiteRequest("a", "shed", 1.0, NOW, NOW + timedelta(hours=1), "vtn/e", baseline_kw=4.0)
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 0.0, it_power_kw=5.2), site("b", 0.0)),
        jobs=(job("j1", "a"),),
        requests=(request,),
    )
    given = fleet_arrays(snapshot, PARAMS)
    assert given.fleet.shed_kw[0] == pytest.approx(5.2 - (4.0 - 1.0 * (1 + PARAMS.delivery_margin)))


def test_shed_opt_does_not_wait_for_checkpoints_the_load_leaves_when_they_start() -> None:
    snapshot = replace(
        fleet_for_opt(), jobs=tuple(replace(j, checkpoint_gb=3000.0) for j in fleet_for_opt().jobs)
    )
    decision = opt.decide(event(values=(-3.0,), start_in_h=0.0), snapshot, PARAMS, SIGNALS)
    assert decision.opt == "optIn"


def test_absorb_opt_counts_a_late_job_for_the_share_it_runs() -> None:
    slow = replace(fleet_for_opt(), jobs=(job("j1", "a", gb=400.0),))  # ~ 1380 s to move
    move_s = 400 / 0.6 + 8 * 400 / 9 + 400 / 1.5
    in_time = event(values=(0.5,), resources=("b",), start_in_h=0.5, duration_h=1.0)
    assert opt.decide(in_time, slow, PARAMS, SIGNALS).opt == "optIn"
    now = event(values=(0.8,), resources=("b",), start_in_h=0.0, duration_h=1.0)
    decision = opt.decide(now, slow, PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert decision.predicted_kw == pytest.approx(NET_JOB_KW * (1 - move_s / 3600))


def test_absorb_opt_counts_jobs_that_arrive_in_time() -> None:
    e = event(values=(2.0,), resources=("b",))
    assert opt.decide(e, fleet_for_opt(), PARAMS, SIGNALS).opt == "optIn"
    too_much = event(values=(50.0,), resources=("b",))
    assert opt.decide(too_much, fleet_for_opt(), PARAMS, SIGNALS).opt == "optOut"


def test_absorb_opt_counts_a_job_that_ends_early_for_the_share_it_runs() -> None:
    """A job with 0.5 h of work left (1 GPU h on 2 GPUs) runs the first quarter of a 2 h
    absorb and then takes its load with it: it counts for a quarter, not in full."""
    short = replace(fleet_for_opt(), jobs=(replace(job("j1", "a"), work_remaining_gpu_h=1.0),))
    e = event(values=(0.5,), resources=("b",), start_in_h=0.0, duration_h=2.0)
    decision = opt.decide(e, short, PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert decision.predicted_kw == pytest.approx(NET_JOB_KW * 0.25)
    lasting = replace(short, jobs=(job("j1", "a"),))
    assert opt.decide(e, lasting, PARAMS, SIGNALS).opt == "optIn"


def test_absorb_moves_prefer_jobs_that_run_to_its_end() -> None:
    """j1 moves quicker but finishes within the hour of the absorb; j2 lasts: j2 goes."""
    request = SiteRequest("b", "absorb", 0.5, NOW, NOW + timedelta(hours=1), "vtn/e3")
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 10.0, it_power_kw=2.6), site("b", 0.0)),
        jobs=(
            replace(job("j1", "a", gb=1.0), work_remaining_gpu_h=0.5),
            job("j2", "a", gb=20.0),
        ),
        requests=(request,),
    )
    [decision] = plan(snapshot, PARAMS)
    assert decision.job_id == "j2"
    both_last = replace(snapshot, jobs=(job("j1", "a", gb=1.0), job("j2", "a", gb=20.0)))
    [decision] = plan(both_last, PARAMS)
    assert decision.job_id == "j1", "the quickest when both last"


def test_an_absorb_in_force_replaces_a_job_before_it_finishes() -> None:
    """b holds its baseline plus the ask, but j0 there finishes within ``refill_ahead_s``:
    that load counts as gone, so a replacement is asked for now."""
    end_at = NOW + timedelta(hours=2)
    request = SiteRequest("b", "absorb", 1.0, NOW, end_at, "vtn/e", baseline_kw=0.0)
    at_b = job("j0", "b", power_kw=2.0)
    snapshot = Snapshot(
        at=NOW,
        sites=(site("a", 0.0, it_power_kw=1.3), site("b", 0.0, it_power_kw=2.0)),
        jobs=(at_b, job("j1", "a")),
        requests=(request,),
    )
    assert fleet_arrays(snapshot, PARAMS).fleet.absorb_kw[1] <= 0.0, "holds baseline plus ask"
    ending = replace(
        snapshot, jobs=(replace(at_b, work_remaining_gpu_h=1.0), job("j1", "a"))
    )  # 0.5 h left: within 1800 s
    # Baseline 0 plus the ask with its margin, less the 2 kW now, plus the 2 kW ending.
    target_kw = 1.0 * (1 + PARAMS.delivery_margin)
    assert fleet_arrays(ending, PARAMS).fleet.absorb_kw[1] == pytest.approx(target_kw)
    [decision] = plan(ending, PARAMS)
    assert (decision.job_id, decision.target_site_id) == ("j1", "b")


def test_opt_out_of_an_event_that_would_break_an_opposite_promise_at_its_site() -> None:
    """b promised to shed for another event from 1.5 h on; an absorb at b overlapping it is
    declined (one meter cannot show both), one that ends before it is not, and another shed
    overlapping it is decided on its merits."""
    shed_at_b = SiteRequest(
        "b", "shed", 0.5, NOW + timedelta(hours=1.5), NOW + timedelta(hours=3), "vtn/other"
    )
    promised = replace(fleet_for_opt(), requests=(shed_at_b,))
    overlapping = event(values=(2.0,), resources=("b",), start_in_h=1.0, duration_h=1.0)
    decision = opt.decide(overlapping, promised, PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert "b: absorb would break the shed promised to vtn/other" in decision.reason
    before = event(values=(2.0,), resources=("b",), start_in_h=0.5, duration_h=1.0)
    assert opt.decide(before, promised, PARAMS, SIGNALS).opt == "optIn"
    shed_at_a = SiteRequest("a", "shed", 0.5, NOW, NOW + timedelta(hours=3), "vtn/other")
    same_way = replace(fleet_for_opt(), requests=(shed_at_a,))
    assert opt.decide(event(values=(-3.0,)), same_way, PARAMS, SIGNALS).opt == "optIn"


def test_unsupported_signal_is_refused_with_460() -> None:
    decision = opt.decide(event("x-custom", "level", (1.0,)), fleet_for_opt(), PARAMS, SIGNALS)
    assert (decision.opt, decision.response_code) == ("optOut", 460)


def test_test_event_is_answered_and_says_so() -> None:
    decision = opt.decide(event(test_event=True), fleet_for_opt(), PARAMS, SIGNALS)
    assert decision.opt == "optIn"
    assert decision.reason.startswith("test event, no load moves")


SHED_CASES = [
    # label, job (power kW, checkpoint GB) list, shed IT kW, expected job ids
    # each job on 2 GPUs: what it takes off the meter is its power less 0.22 kW of idle draw
    ("the quickest job that covers", [(5.4, 84.0), (1.3, 5.0), (1.2, 3.6)], 0.9, ["j2"]),
    ("two small quick jobs beat one slow big one", [(5.4, 84.0), (1.3, 5.0), (1.2, 3.6)], 2.0,
     ["j2", "j1"]),
    ("one big job beats many slow small ones", [(5.4, 20.0), (1.3, 50.0), (1.3, 50.0)], 2.5,
     ["j0"]),
    ("nothing covers: largest first", [(1.0, 1.0), (2.0, 1.0)], 9.0, ["j1", "j0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "specs", "shed_kw", "expected"), SHED_CASES, ids=[c[0] for c in SHED_CASES]
)
def test_choose_shed_jobs(
    label: str, specs: list[tuple[float, float]], shed_kw: float, expected: list[str]
) -> None:
    jobs = tuple(job(f"j{i}", "a", power_kw=kw, gb=gb) for i, (kw, gb) in enumerate(specs))
    snapshot = Snapshot(
        at=NOW, sites=(site("a", 0.0, bandwidth_gbps=1.0), site("b", 0.0)), jobs=jobs
    )
    given = fleet_arrays(snapshot, PARAMS)
    chosen = choose_shed_jobs(given.fleet, np.arange(len(jobs)), shed_kw, PARAMS, budget=4)
    assert [given.jobs[int(i)].job_id for i in chosen] == expected


# -- manual override -----------------------------------------------------------------------


def test_no_job_moves_into_a_site_under_manual_override() -> None:
    snapshot = Snapshot(
        at=NOW,
        sites=(
            site("dark", 0.0, it_power_kw=1.3),
            replace(site("sunny", 10.0), manual_override=True),
        ),
        jobs=(job("j1", "dark"),),
    )
    assert plan(snapshot, PARAMS) == []
    assert len(plan(replace(snapshot, sites=(snapshot.sites[0], site("sunny", 10.0))), PARAMS)) == 1


def test_an_event_naming_a_site_under_manual_override_is_declined() -> None:
    snapshot = fleet_for_opt()
    overridden = replace(
        snapshot,
        sites=tuple(replace(s, manual_override=s.site_id == "a") for s in snapshot.sites),
    )
    assert opt.decide(event(values=(-3.0,)), snapshot, PARAMS, SIGNALS).opt == "optIn"
    decision = opt.decide(event(values=(-3.0,)), overridden, PARAMS, SIGNALS)
    assert (decision.opt, decision.reason) == ("optOut", "a: under manual override")
    assert peak_requests(event(values=(-3.0,)), overridden.sites, {"a": 5.0}, SIGNALS) == []
