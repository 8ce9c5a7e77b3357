"""Bad start-up files and settings: one line naming the file and the key, exit 2.

First the failures issue 12 found, each through ``gateway.cli.main`` as the command runs
them; then seeded mutants of every shipped example input (``simulators.file_mutations``)
through the command that reads it, and arbitrary bytes through the TOML readers: each ends
in success or the tool's input error naming the file, never another exception.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.agent.config import load_agent_settings
from gateway.cli import main
from gateway.commands.console import one_line
from gateway.errors import ConfigError, InputError
from gateway.settings import MAX_CONFIG_BYTES, load_settings
from simulators.campaign import load_config as load_campaign
from simulators.file_fuzz import (
    KINDS,
    Inputs,
    Kind,
    command,
    judge,
    mutant_files,
    run_main,
    write_inputs,
)
from simulators.file_mutations import mutants
from simulators.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
MUTANTS_PER_KIND = 40
SEED = 20261207


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return write_inputs(tmp_path / "inputs")


def _config(inputs: Inputs, text: str) -> Path:
    path = inputs.work_dir / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command that must exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- the failures of issue 12, finding 6 -----------------------------------------------------


def test_config_not_utf8(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    path = inputs.work_dir / "latin1.toml"
    path.write_bytes(b'[web]\nhost = "caf\xe9"\n')
    line = _error_line(["run", "--check", "--config", str(path)], capsys)
    assert line == (
        f"dr-gateway: {path}: line 2, column 12: byte 0xe9 is not UTF-8 text; "
        "the configuration must be UTF-8"
    )


def test_config_nested_2000_deep(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(inputs, "[web]\nhost = " + "[" * 2000 + "]" * 2000 + "\n")
    line = _error_line(["db", "current", "--config", str(path)], capsys)
    assert line == f"dr-gateway: {path}: not valid TOML: arrays or inline tables nested too deeply"


def test_sqlite_in_missing_directory(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    missing = inputs.work_dir / "nonexistent-dir"
    path = _config(inputs, f'[database]\nurl = "sqlite:///{missing}/x.db"\n')
    for argv in (["run", "--config", str(path)], ["db", "upgrade", "--config", str(path)]):
        line = _error_line(argv, capsys)
        assert line.startswith(f"dr-gateway: {path}: database.url: cannot create ")
        assert f"the directory {missing} does not exist" in line
    assert not missing.exists()


def test_sqlite_not_a_database(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(inputs, f'[database]\nurl = "sqlite:///{inputs.jobs}"\n')
    line = _error_line(["db", "current", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: database.url: cannot open {inputs.jobs} as a")
    assert "file is not a database" in line


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:"])
def test_in_memory_sqlite_refused(
    inputs: Inputs, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(inputs, f'[database]\nurl = "{url}"\n')
    for argv in (
        ["run", "--check", "--config", str(path)],
        ["db", "current", "--config", str(path)],
    ):
        line = _error_line(argv, capsys)
        assert line.startswith(f"dr-gateway: {path}: database.url: an in-memory SQLite database")


def test_controller_url_credentials_refused_unechoed(
    inputs: Inputs, capsys: pytest.CaptureFixture[str]
) -> None:
    text = inputs.config.read_text(encoding="utf-8")
    site_url = 'controller_url = "http://127.0.0.1:9001"'
    assert site_url in text
    path = _config(
        inputs, text.replace(site_url, 'controller_url = "http://admin:hunter2-pw@127.0.0.1:9001"')
    )
    line = _error_line(["run", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: site[0].controller_url: credentials in the URL")
    assert "set controller_token instead" in line
    assert "hunter2" not in line and "admin" not in line


def test_unresolvable_web_host_names_file_and_key(
    inputs: Inputs, capsys: pytest.CaptureFixture[str]
) -> None:
    database = inputs.work_dir / "web.db"
    path = _config(
        inputs,
        f'[database]\nurl = "sqlite:///{database}"\n[web]\nenabled = true\n'
        'host = "no-such-host.invalid"\ntoken = "abcdefghijklmnopqrstuvwxyz"\n',
    )
    line = _error_line(["run", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: web.host: cannot resolve 'no-such-host.invalid'")
    assert not database.exists()  # refused before the database was created


# --- the rest of the class --------------------------------------------------------------------


def test_check_options_accept_the_examples(
    inputs: Inputs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--check", "--config", str(inputs.config)]) == 0
    assert capsys.readouterr().out == f"{inputs.config}: the configuration is valid\n"
    assert main(["site-agent", "--check", "--config", str(inputs.agent)]) == 0
    assert capsys.readouterr().out == f"{inputs.agent}: the site agent's configuration is valid\n"
    assert not (inputs.work_dir / "gateway.db").exists()  # --check creates nothing
    assert not (inputs.work_dir / "var").exists()


@pytest.mark.parametrize("command_name", ["run", "site-agent"])
def test_check_option_is_documented(command_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command_name, "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--check only check the configuration" in help_text


def test_agent_data_dir_that_is_a_file(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = inputs.work_dir / "blocker"
    blocker.write_text("not a directory\n")
    text = inputs.agent.read_text(encoding="utf-8")
    path = inputs.agent.with_name("bad-agent.toml")
    path.write_text(text.replace('data_dir = "../var/site-a"', f'data_dir = "{blocker}/x"'))
    line = _error_line(["site-agent", "--check", "--config", str(path)], capsys)
    assert line == (
        f"dr-gateway: {path}: data_dir: cannot create {blocker}/x: {blocker} is not a directory"
    )


def test_listen_port_in_use(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _config(
            inputs,
            f'[database]\nurl = "sqlite:///{inputs.work_dir}/web.db"\n[web]\nenabled = true\n'
            f'port = {port}\ntoken = "abcdefghijklmnopqrstuvwxyz"\n',
        )
        line = _error_line(["run", "--config", str(path)], capsys)
        assert line.startswith(f"dr-gateway: {path}: web.port: cannot listen on 127.0.0.1:{port}")
        agent = inputs.agent.with_name("busy-agent.toml")
        text = inputs.agent.read_text(encoding="utf-8")
        agent.write_text(text.replace("listen_port = 8470", f"listen_port = {port}"))
        line = _error_line(["site-agent", "--config", str(agent)], capsys)
        assert line.startswith(f"dr-gateway: {agent}: listen_port: cannot listen on 127.0.0.1:")
        assert main(["site-agent", "--check", "--config", str(agent)]) == 0  # --check binds not


@pytest.mark.parametrize(
    ("key_line", "expected"),
    [
        ("speed = inf", "clock.speed: Input should be a finite number (got inf)"),
        ("speed = nan", "clock.speed: Input should be a finite number (got nan)"),
        ("speed = -1.0", "clock.speed: Input should be greater than 0 (got -1.0)"),
        ("speed = 1e300", "clock.speed: Input should be less than or equal to 1000000000"),
        ('start_at = "9999-12-31T00:00:00Z"', "clock.start_at: 9999-12-31T00:00:00+00:00 is"),
    ],
)
def test_numbers_out_of_range(
    inputs: Inputs, key_line: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(inputs, f"[clock]\n{key_line}\n")
    line = _error_line(["run", "--check", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: {expected}")


def test_secret_values_never_shown(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    text = inputs.config.read_text(encoding="utf-8")
    assert 'url = "sqlite:///' in text
    path = _config(inputs, text.replace('url = "sqlite:///', 'url = "mysql://u:pw-secret@h/', 1))
    line = _error_line(["run", "--check", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: database.url: expected a sqlite:///")
    assert "pw-secret" not in line and "(got 'mysql://***@h/" in line
    token = 'controller_token = "replace-with-the-site-token"'
    assert token in text
    path.write_text(text.replace(token, 'controller_token = "tiny-pw"'))
    line = _error_line(["run", "--check", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: site[0].controller_token: String should have")
    assert "tiny-pw" not in line


def test_oversized_and_special_files(inputs: Inputs, capsys: pytest.CaptureFixture[str]) -> None:
    big = inputs.work_dir / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    line = _error_line(["run", "--check", "--config", str(big)], capsys)
    assert line == f"dr-gateway: {big}: the configuration is larger than 16 MiB"
    line = _error_line(["run", "--check", "--config", "/dev/zero"], capsys)
    assert line == "dr-gateway: /dev/zero: cannot read the configuration: not a regular file"
    line = _error_line(["site-agent", "--check", "--config", str(inputs.work_dir)], capsys)
    assert line == (
        f"dr-gateway: {inputs.work_dir}: cannot read the agent configuration: not a regular file"
    )


def test_one_line_escapes_control_characters() -> None:
    assert one_line("a\nb\r\n\n c") == "a / b / c"
    assert one_line("key \x1b[31mred\x00") == "key \\x1b[31mred\\x00"


def test_a_bug_keeps_its_traceback(inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """No catch-all turns an internal error into an input error."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("gateway.commands.run.check_daemon", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["run", "--check", "--config", str(inputs.config)])


# --- fuzz -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_inputs_exit_0_or_2_naming_the_file(inputs: Inputs, kind: Kind) -> None:
    """Seeded mutants of each example input through the command that reads it."""
    others = [inputs.sites, inputs.traces, inputs.jobs, inputs.carbon_config]
    failures: list[str] = []
    codes: set[int | None] = set()
    for mutant, path in mutant_files(inputs, kind, SEED, MUTANTS_PER_KIND):
        outcome = run_main(command(inputs, kind, path))
        codes.add(outcome.exit_code)
        problem = judge(outcome, [path, *others])
        if problem is not None:
            failures.append(f"{mutant.what}: {problem}")
    assert failures == []
    assert codes == {0, 2}  # the mutants reach both outcomes: the test can tell them apart


@pytest.mark.parametrize(
    ("example", "reader", "error"),
    [
        ("demo-scenario.toml", load_scenario, ConfigError),
        ("campaign.toml", load_campaign, InputError),
        ("example.toml", load_settings, ConfigError),
        ("site-agent.example.toml", load_agent_settings, ConfigError),
    ],
)
def test_mutated_toml_readers(
    tmp_path: Path, example: str, reader: object, error: type[Exception]
) -> None:
    """The readers of the demo's scenario and the campaign file too (their commands run for
    minutes): a valid result or ``error`` naming the file, nothing else."""
    assert callable(reader)
    original = (ROOT / "config" / example).read_bytes()
    for i, mutant in enumerate(mutants("toml", original, SEED, MUTANTS_PER_KIND)):
        path = mutant.write(tmp_path / f"{i}-{example}")
        try:
            reader(path)
        except error as exc:
            assert str(exc).startswith(f"{path}"), (mutant.what, str(exc))


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_as_configuration(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "any.toml"
    path.write_bytes(data)
    for reader in (load_settings, load_agent_settings):
        try:
            reader(path)
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: ")


PG_URL = os.environ.get("DR_GATEWAY_TEST_PG_URL")


@pytest.mark.skipif(PG_URL is None, reason="DR_GATEWAY_TEST_PG_URL is not set")
def test_postgresql_refusal_is_a_setting_silence_is_not(
    inputs: Inputs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that refuses the URL's database is a bad setting (exit 2); a server that does
    not answer is a failure of the moment (exit 1); both one line naming the file and key."""
    assert PG_URL is not None
    unknown = PG_URL.rsplit("/", 1)[0] + "/no_such_database_h12"
    path = _config(inputs, f'[database]\nurl = "{unknown}"\n')
    line = _error_line(["run", "--check", "--config", str(path)], capsys)
    assert line.startswith(f"dr-gateway: {path}: database.url: cannot connect to ")
    assert 'database "no_such_database_h12" does not exist' in line
    path.write_text('[database]\nurl = "postgresql+psycopg://postgres@127.0.0.1:1/x"\n')
    assert main(["run", "--check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dr-gateway: {path}: database.url: cannot connect to ")
    assert err.count("\n") == 1 and "Traceback" not in err
