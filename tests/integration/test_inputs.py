"""The evaluation's input formats: sites, traces, jobs and the synthetic workload."""

from __future__ import annotations

import dataclasses
import gzip
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gateway.errors import InputError
from gateway.evaluation.input_jobs import JOB_COLUMNS, JobsTable, load_jobs
from gateway.evaluation.input_sites import SiteSpec, load_sites
from gateway.evaluation.input_traces import Traces, load_traces, resample
from gateway.evaluation.workload import WorkloadParams, generate_workload, parse_workload

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "data" / "traces"
START = datetime(2001, 1, 1, tzinfo=UTC)
SITES = (
    SiteSpec("a", gpus_total=8, it_power_max_kw=6.0, pue=1.2, wan_bandwidth_gbps=10.0),
    SiteSpec("b", gpus_total=16, it_power_max_kw=12.0, pue=1.1, wan_bandwidth_gbps=1.0),
)


def _write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


# --- sites -------------------------------------------------------------------------------

SITE_A = 'id = "a"\ngpus_total = 8\nit_power_max_kw = 6.0\nwan_bandwidth_gbps = 10.0\n'

BAD_SITES: list[tuple[str, str, str]] = [
    # label, file text, expected part of the message (after the file name)
    ("unknown key", f"[[site]]\n{SITE_A}gpus_totl = 3\n", "site[0].gpus_totl: unknown key"),
    (
        "missing key",
        '[[site]]\nid = "a"\ngpus_total = 8\nit_power_max_kw = 6.0\n',
        "site[0].wan_bandwidth_gbps: required key is missing",
    ),
    ("bad value", f"[[site]]\n{SITE_A}pue = 4.0\n", "site[0].pue: Input should be less than"),
    ("non-positive", f"[[site]]\n{SITE_A}".replace("= 8", "= 0"), "site[0].gpus_total"),
    ("duplicate id", f"[[site]]\n{SITE_A}[[site]]\n{SITE_A}", "site[1].id: duplicate site id"),
    ("other section", f"[database]\nurl = 'x'\n[[site]]\n{SITE_A}", "database: unknown key"),
    ("no sites", "", "site: required key is missing"),
    ("empty list", "site = []\n", "site: List should have at least 1 item"),
    ("not TOML", "[[site]\n", "not valid TOML"),
]


@pytest.mark.parametrize(("label", "text", "expected"), BAD_SITES, ids=[c[0] for c in BAD_SITES])
def test_bad_sites_file_names_file_key_and_problem(
    tmp_path: Path, label: str, text: str, expected: str
) -> None:
    path = _write(tmp_path / "sites.toml", text)
    with pytest.raises(InputError) as info:
        load_sites(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_sites_accept_the_daemon_only_keys_and_keep_file_order(tmp_path: Path) -> None:
    text = (
        f'[[site]]\nid = "b"\ngpus_total = 16\nit_power_max_kw = 12.0\npue = 1.1\n'
        f"wan_bandwidth_gbps = 1.0\n[[site]]\n{SITE_A}pue = 1.2\n"
        'controller_url = "http://127.0.0.1:9000/"\ncontroller_token = "secret-token"\n'
        'vtn = "utility-a"\nresource_id = "res-a"\n'
    )
    assert load_sites(_write(tmp_path / "sites.toml", text)) == (SITES[1], SITES[0])


def test_missing_sites_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the sites file"):
        load_sites(tmp_path / "nope.toml")


# --- traces ------------------------------------------------------------------------------

GOOD_TRACES = (
    "timestamp,a,b\n"
    "2001-01-01T00:00:00Z,0.0,1.0\n"
    "2001-01-01T01:00:00Z,2.0,3.0\n"
    "2001-01-01T02:00:00Z,4.0,5.0\n"
)

BAD_TRACES: list[tuple[str, str, list[str]]] = [
    # label, file text, parts the message must hold besides the file name
    ("missing timestamp", "time,a,b\n2001-01-01T00:00:00Z,1,1\n", ["line 1", "no 'timestamp'"]),
    ("timestamp not first", "a,timestamp,b\n1,2001-01-01T00:00:00Z,1\n", ["first column"]),
    ("site without column", "timestamp,a\n2001-01-01T00:00:00Z,1\n", ["site 'b' has no column"]),
    (
        "unknown column",
        "timestamp,a,b,c\n2001-01-01T00:00:00Z,1,1,1\n",
        ["line 1", "column 'c'", "unknown site"],
    ),
    (
        "duplicate column",
        "timestamp,a,b,a\n2001-01-01T00:00:00Z,1,1,1\n",
        ["line 1", "'a' appears twice"],
    ),
    (
        "not a number",
        GOOD_TRACES.replace("2.0,3.0", "2.0,abc"),
        ["line 3", "column 'b'", "not a number ('abc')"],
    ),
    ("empty value", GOOD_TRACES.replace("2.0,3.0", ",3.0"), ["line 3", "column 'a'", "empty"]),
    ("negative", GOOD_TRACES.replace("4.0,5.0", "-4.0,5.0"), ["line 4", "column 'a'", ">= 0"]),
    ("NaN", GOOD_TRACES.replace("0.0,1.0", "0.0,nan"), ["line 2", "column 'b'", "not a finite"]),
    ("infinite", GOOD_TRACES.replace("0.0,1.0", "inf,1.0"), ["line 2", "not a finite"]),
    (
        "duplicate timestamp",
        GOOD_TRACES.replace("T01:00", "T00:00"),
        ["line 3", "column 'timestamp'", "duplicate timestamp (same instant as line 2)"],
    ),
    (
        "unsorted",
        GOOD_TRACES.replace("T02:00", "T00:30"),
        ["line 4", "column 'timestamp'", "not sorted"],
    ),
    (
        "irregular step",
        GOOD_TRACES.replace("T02:00", "T03:00"),
        ["line 4", "irregular step: 7200 s after line 3, expected 3600 s"],
    ),
    ("one row", "timestamp,a,b\n2001-01-01T00:00:00Z,1,1\n", ["1 data rows", "at least 2"]),
    ("no rows", "timestamp,a,b\n", ["0 data rows"]),
    ("empty file", "", ["empty file"]),
    (
        "naive timestamp",
        GOOD_TRACES.replace("T01:00:00Z", "T01:00:00"),
        ["line 3", "column 'timestamp'", "no UTC offset"],
    ),
    (
        "bad timestamp",
        GOOD_TRACES.replace("2001-01-01T01:00:00Z", "yesterday"),
        ["line 3", "not an ISO 8601 timestamp ('yesterday')"],
    ),
    ("short row", GOOD_TRACES.replace("2.0,3.0", "2.0"), ["line 3", "2 fields, expected 3"]),
]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize(("label", "text", "expected"), BAD_TRACES, ids=[c[0] for c in BAD_TRACES])
def test_bad_traces_name_file_line_column_and_problem(
    tmp_path: Path, label: str, text: str, expected: list[str], suffix: str
) -> None:
    path = _write(tmp_path / f"traces{suffix}", text)
    with pytest.raises(InputError) as info:
        load_traces(path, SITES)
    message = str(info.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, message


def test_traces_in_the_order_of_the_sites(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", GOOD_TRACES)
    traces = load_traces(path, (SITES[1], SITES[0]))
    assert traces.site_ids == ("b", "a")
    assert traces.start_at == START and traces.step_s == 3600.0
    np.testing.assert_array_equal(traces.renewable_kw, [[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    np.testing.assert_array_equal(traces.timestamps_s, [0.0, 3600.0, 7200.0])
    np.testing.assert_array_equal(traces.site_kw("a"), [0.0, 2.0, 4.0])
    assert not traces.renewable_kw.flags.writeable


def test_any_utc_offset_is_converted_to_utc(tmp_path: Path) -> None:
    text = (
        "timestamp,a,b\n"
        "2001-01-01T01:00:00+01:00,0,0\n"
        "2001-01-01 01:00:00+00:00,0,0\n"
        "2000-12-31T21:00:00-05:00,0,0\n"
    )
    traces = load_traces(_write(tmp_path / "t.csv", text), SITES)
    assert traces.start_at == START and traces.start_at.utcoffset() == timedelta(0)
    assert traces.step_s == 3600.0


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    text = GOOD_TRACES.replace("\n2001-01-01T01", "\n\n2001-01-01T01").replace("4.0,5.0", "x,5")
    with pytest.raises(InputError, match="line 5, column 'a'"):
        load_traces(_write(tmp_path / "t.csv", text), SITES)


def test_resample_to_a_finer_step_interpolates_linearly(tmp_path: Path) -> None:
    traces = load_traces(_write(tmp_path / "t.csv", GOOD_TRACES), SITES)
    fine = resample(traces, 900.0)
    assert fine.step_s == 900.0 and fine.start_at == traces.start_at
    assert fine.renewable_kw.shape == (9, 2)
    np.testing.assert_allclose(fine.renewable_kw[:, 0], np.arange(9) * 0.5)
    np.testing.assert_allclose(fine.renewable_kw[::4], traces.renewable_kw)


def test_resample_to_a_coarser_step_samples_the_line(tmp_path: Path) -> None:
    traces = load_traces(_write(tmp_path / "t.csv", GOOD_TRACES), SITES)
    coarse = resample(traces, 7200.0)
    np.testing.assert_allclose(coarse.renewable_kw, [[0.0, 1.0], [4.0, 5.0]])
    odd = resample(traces, 5400.0)  # the grid stops at the last point before the end
    np.testing.assert_allclose(odd.renewable_kw, [[0.0, 1.0], [3.0, 4.0]])


@pytest.mark.parametrize("step_s", [0.0, -60.0, 9000.0])
def test_resample_rejects_a_step_that_leaves_no_grid(tmp_path: Path, step_s: float) -> None:
    traces = load_traces(_write(tmp_path / "t.csv", GOOD_TRACES), SITES)
    with pytest.raises(ValueError, match="step_s"):
        resample(traces, step_s)


def test_traces_reject_inconsistent_arrays() -> None:
    with pytest.raises(ValueError, match="shape"):
        Traces(START, 60.0, ("a", "b"), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=">= 0"):
        Traces(START, 60.0, ("a",), np.array([[0.0], [-1.0]]))


# --- bundled files -----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["default", "holdout"])
def test_bundled_scenario_round_trips(scenario: str) -> None:
    sites = load_sites(BUNDLED / f"{scenario}-sites.toml")
    assert len(sites) >= 5
    traces = load_traces(BUNDLED / f"{scenario}-traces.csv.gz", sites)
    assert traces.site_ids == tuple(s.id for s in sites)
    assert traces.renewable_kw.shape == (8760, len(sites))
    assert traces.start_at == START and traces.step_s == 3600.0
    assert np.all(traces.renewable_kw >= 0)
    assert np.all(traces.renewable_kw.max(axis=0) > 0)
    assert {s.wan_bandwidth_gbps for s in sites} == {1.0, 10.0, 100.0}
    fine = resample(traces, 900.0)
    assert fine.renewable_kw.shape == (8759 * 4 + 1, len(sites))


def test_holdout_sites_are_other_sites() -> None:
    default = {s.id for s in load_sites(BUNDLED / "default-sites.toml")}
    holdout = {s.id for s in load_sites(BUNDLED / "holdout-sites.toml")}
    assert not default & holdout


def test_bundled_moer_trace_is_a_year_of_hourly_rates() -> None:
    frame = pd.read_csv(BUNDLED / "caiso-moer-hourly.csv.gz")
    assert list(frame.columns) == ["timestamp", "SGIP_CAISO_PGE", "SGIP_CAISO_SCE"]
    assert len(frame) == 8760
    assert frame["timestamp"].iloc[0] == "2001-01-01T00:00:00Z"
    assert frame["timestamp"].iloc[-1] == "2001-12-31T23:00:00Z"
    rates = frame[["SGIP_CAISO_PGE", "SGIP_CAISO_SCE"]].to_numpy()
    assert np.all((rates >= 0) & (rates < 1.0))  # kg CO2 per kWh


# --- jobs --------------------------------------------------------------------------------

JOBS_HEADER = ",".join(JOB_COLUMNS)
GOOD_JOBS = (
    f"{JOBS_HEADER}\n"
    "j1,2001-01-01T02:00:00Z,2,1.3,4.88,40,a,true\n"
    "j2,2001-01-01T00:00:00Z,1,0.6,1.96,20,,0\n"
    "j3,2001-01-01T01:00:00+01:00,8,5.5,17.0,100,b,1\n"
)

BAD_JOBS: list[tuple[str, str, list[str]]] = [
    (
        "missing column",
        "\n".join(line.rsplit(",", 1)[0] for line in GOOD_JOBS.splitlines()),
        ["line 1", "missing column 'migratable'"],
    ),
    (
        "unknown column",
        "\n".join(f"{line},x" for line in GOOD_JOBS.splitlines()),
        ["line 1", "column 'x': unknown column"],
    ),
    ("duplicate job_id", GOOD_JOBS.replace("j2,", "j1,"), ["line 3", "duplicate job_id"]),
    ("empty job_id", GOOD_JOBS.replace("j2,", ","), ["line 3", "column 'job_id'", "empty"]),
    (
        "unknown site",
        GOOD_JOBS.replace(",b,1", ",zz,1"),
        ["line 4", "column 'site_id'", "unknown site 'zz'"],
    ),
    ("zero gpus", GOOD_JOBS.replace(",2,1.3", ",0,1.3"), ["line 2", "column 'gpus'", "> 0"]),
    ("fractional gpus", GOOD_JOBS.replace(",2,1.3", ",1.5,1.3"), ["line 2", "not a whole"]),
    ("zero power", GOOD_JOBS.replace(",1.3,", ",0,"), ["line 2", "column 'power_kw'", "> 0"]),
    ("zero work", GOOD_JOBS.replace(",20,", ",0,"), ["line 3", "column 'work_gpu_h'", "> 0"]),
    (
        "negative checkpoint",
        GOOD_JOBS.replace(",1.96,", ",-1,"),
        ["line 3", "column 'checkpoint_gb'", ">= 0"],
    ),
    (
        "bad timestamp",
        GOOD_JOBS.replace("2001-01-01T02:00:00Z", "2001-13-01T02:00:00Z"),
        ["line 2", "column 'submit_at'", "not an ISO 8601"],
    ),
    (
        "before the trace start",
        GOOD_JOBS.replace("2001-01-01T00:00:00Z", "2000-12-31T23:00:00Z"),
        ["line 3", "column 'submit_at'", "before the trace start"],
    ),
    ("bad boolean", GOOD_JOBS.replace(",true", ",yes"), ["line 2", "column 'migratable'"]),
    ("no rows", f"{JOBS_HEADER}\n", ["no job rows"]),
    (
        "does not fit its site",
        GOOD_JOBS.replace(",8,5.5,17.0,100,b", ",8,6.5,17.0,100,a"),
        ["line 4", "column 'site_id'", "does not fit site 'a'"],
    ),
    (
        "fits no site",
        GOOD_JOBS.replace(",1,0.6,", ",32,20,"),
        ["line 3", "column 'gpus'", "fits no site"],
    ),
]


@pytest.mark.parametrize(("label", "text", "expected"), BAD_JOBS, ids=[c[0] for c in BAD_JOBS])
def test_bad_jobs_name_file_line_column_and_problem(
    tmp_path: Path, label: str, text: str, expected: list[str]
) -> None:
    path = _write(tmp_path / "jobs.csv", text)
    with pytest.raises(InputError) as info:
        load_jobs(path, SITES, START)
    message = str(info.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize("name", ["jobs.csv", "jobs.csv.gz"])
def test_jobs_are_parsed_and_sorted_by_submit_time(tmp_path: Path, name: str) -> None:
    jobs = load_jobs(_write(tmp_path / name, GOOD_JOBS), SITES, START)
    assert isinstance(jobs, JobsTable) and len(jobs) == 3
    assert jobs.job_ids == ("j2", "j3", "j1")
    np.testing.assert_array_equal(jobs.submit_s, [0.0, 0.0, 7200.0])
    np.testing.assert_array_equal(jobs.gpus, [1, 8, 2])
    assert jobs.gpus.dtype == np.int64 and jobs.site_index.dtype == np.int64
    np.testing.assert_array_equal(jobs.power_kw, [0.6, 5.5, 1.3])
    np.testing.assert_array_equal(jobs.checkpoint_gb, [1.96, 17.0, 4.88])
    np.testing.assert_array_equal(jobs.work_gpu_h, [20.0, 100.0, 40.0])
    np.testing.assert_array_equal(jobs.site_index, [-1, 1, 0])
    np.testing.assert_array_equal(jobs.migratable, [False, True, True])
    assert not jobs.submit_s.flags.writeable


def test_job_columns_may_come_in_any_order(tmp_path: Path) -> None:
    frame = pd.read_csv(_write(tmp_path / "jobs.csv", GOOD_JOBS), dtype=str, keep_default_na=False)
    shuffled = frame[list(reversed(JOB_COLUMNS))]
    path = tmp_path / "shuffled.csv"
    shuffled.to_csv(path, index=False)
    assert load_jobs(path, SITES, START).job_ids == ("j2", "j3", "j1")


# --- synthetic workload ------------------------------------------------------------------

YEAR_S = 365 * 86400.0


def _tables_equal(a: JobsTable, b: JobsTable) -> bool:
    return a.job_ids == b.job_ids and all(
        np.array_equal(getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(JobsTable)
        if f.name != "job_ids"
    )


def test_equal_seeds_give_equal_workloads_and_other_seeds_do_not() -> None:
    params = WorkloadParams(rate_per_h=5.0, seed=7)
    first = generate_workload(params, SITES, START, 7 * 86400.0)
    again = generate_workload(params, SITES, START, 7 * 86400.0)
    assert _tables_equal(first, again)
    other = generate_workload(params, SITES, START, 7 * 86400.0, seed=8)
    assert not _tables_equal(first, other)
    assert _tables_equal(
        other, generate_workload(dataclasses.replace(params, seed=8), SITES, START, 7 * 86400.0)
    )


def test_workload_draws_stay_in_their_ranges() -> None:
    params = WorkloadParams()
    jobs = generate_workload(params, SITES, START, YEAR_S, seed=1)
    expected = params.rate_per_h * YEAR_S / 3600.0
    assert abs(len(jobs) - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(jobs.submit_s) >= 0)
    assert jobs.submit_s[0] >= 0 and jobs.submit_s[-1] < YEAR_S
    assert set(np.unique(jobs.gpus).tolist()) == {1, 2, 4, 8}
    per_gpu_kw = jobs.power_kw / jobs.gpus
    assert per_gpu_kw.min() >= 0.58 and per_gpu_kw.max() <= 0.69
    assert jobs.checkpoint_gb.min() < 1.1 and jobs.checkpoint_gb.max() > 100.0
    assert jobs.checkpoint_gb.min() >= 0.96 and jobs.checkpoint_gb.max() <= 144.0
    # log-uniform: the median sits at the geometric mean of the range
    assert abs(np.log(np.median(jobs.checkpoint_gb)) - np.log(np.sqrt(0.96 * 144.0))) < 0.15
    assert jobs.work_gpu_h.min() >= 1.0 and jobs.work_gpu_h.max() <= 200.0
    assert abs(jobs.migratable.mean() - 0.9) < 0.02
    assert np.all(jobs.site_index == -1)
    assert len(set(jobs.job_ids)) == len(jobs)


def test_random_initial_sites_fit_their_jobs() -> None:
    params = WorkloadParams(
        rate_per_h=20.0, initial_site="random", gpus_choices=(1, 16), gpus_weights=(0.5, 0.5)
    )
    jobs = generate_workload(params, SITES, START, 86400.0, seed=3)
    assert len(jobs) > 100
    assert set(np.unique(jobs.site_index).tolist()) == {0, 1}
    gpus_total = np.array([s.gpus_total for s in SITES])
    power_max = np.array([s.it_power_max_kw for s in SITES])
    assert np.all(jobs.gpus <= gpus_total[jobs.site_index])
    assert np.all(jobs.power_kw <= power_max[jobs.site_index])
    assert np.all(jobs.site_index[jobs.gpus == 16] == 1)


def test_a_job_size_that_fits_no_site_is_refused() -> None:
    with pytest.raises(InputError, match="32-GPU job"):
        generate_workload(
            WorkloadParams(gpus_choices=(1, 32), gpus_weights=(1, 1)), SITES, START, 3600.0
        )


def test_parse_workload_reads_every_key() -> None:
    params = parse_workload(
        "rate_per_h=3.5, gpus_choices=1;2;4, gpus_weights=0.5;0.3;0.2, power_per_gpu_kw_min=0.5,"
        "power_per_gpu_kw_max=0.7,checkpoint_gb_min=2,checkpoint_gb_max=50,work_gpu_h_min=2,"
        "work_gpu_h_max=20,migratable_share=0.5,initial_site=random,seed=11"
    )
    assert params == WorkloadParams(
        rate_per_h=3.5,
        gpus_choices=(1, 2, 4),
        gpus_weights=(0.5, 0.3, 0.2),
        power_per_gpu_kw_min=0.5,
        power_per_gpu_kw_max=0.7,
        checkpoint_gb_min=2.0,
        checkpoint_gb_max=50.0,
        work_gpu_h_min=2.0,
        work_gpu_h_max=20.0,
        migratable_share=0.5,
        initial_site="random",
        seed=11,
    )
    assert parse_workload("") == WorkloadParams()


def test_every_workload_field_has_a_parser() -> None:
    from gateway.evaluation.workload import _WORKLOAD_KEYS

    assert set(_WORKLOAD_KEYS) == {f.name for f in dataclasses.fields(WorkloadParams)}


BAD_WORKLOADS: list[tuple[str, str]] = [
    ("rate=2", "--workload: rate: unknown key"),
    ("rate_per_h", "--workload: 'rate_per_h': expected key=value"),
    ("rate_per_h=fast", "--workload: rate_per_h: expected a number (got 'fast')"),
    ("rate_per_h=nan", "--workload: rate_per_h: expected a number"),
    ("rate_per_h=-1", "--workload: rate_per_h: must be > 0 (got -1.0)"),
    ("seed=1,seed=2", "--workload: seed: given twice"),
    ("seed=1.5", "--workload: seed: expected a whole number"),
    ("gpus_choices=1;x", "--workload: gpus_choices: expected whole numbers"),
    ("gpus_choices=1;2", "--workload: gpus_weights: needs one weight per value"),
    ("gpus_weights=0;0;0;0", "--workload: gpus_weights: weights must be >= 0 and not all 0"),
    ("checkpoint_gb_max=0.5", "--workload: checkpoint_gb_max: must be >= checkpoint_gb_min"),
    ("migratable_share=1.5", "--workload: migratable_share: must be between 0 and 1"),
    ("initial_site=first", "--workload: initial_site: must be none or random (got 'first')"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_WORKLOADS, ids=[c[0] for c in BAD_WORKLOADS])
def test_parse_workload_names_the_bad_key(text: str, expected: str) -> None:
    with pytest.raises(InputError) as info:
        parse_workload(text)
    assert str(info.value).startswith(expected), str(info.value)


def test_bad_params_in_code_are_value_errors() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        WorkloadParams(rate_per_h=0.0)


def test_the_examples_in_docs_inputs_md_load(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "inputs.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    [sites_text] = [body for kind, body in blocks if kind == "toml"]
    traces_text, jobs_text = [body for kind, body in blocks if kind == "csv"]
    sites = load_sites(_write(tmp_path / "sites.toml", sites_text))
    traces = load_traces(_write(tmp_path / "traces.csv", traces_text), sites)
    jobs = load_jobs(_write(tmp_path / "jobs.csv", jobs_text), sites, traces.start_at)
    assert len(sites) == 2 and traces.renewable_kw.shape == (3, 2) and len(jobs) == 3
    [workload] = re.findall(r'--workload "([^"]*rate_per_h=3[^"]*)"', text)
    params = parse_workload(workload)
    assert params.seed == 7 and len(generate_workload(params, sites, traces.start_at, 86400.0)) > 0
