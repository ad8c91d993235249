"""Run settings come from one module: ``liveagg.settings`` reads every ``LIVEAGG_*`` variable
the same way (blank is unset, a bad value names the variable and what is accepted), and no
other module of the package reads the environment for them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveagg.cli import build_parser
from liveagg.runners.flink import FlinkProfile
from liveagg.runners.prism import PrismProfile
from liveagg.runners.spark import SparkProfile
from liveagg.settings import (
    KAFKA_CONFIG_ENV_PREFIX,
    Connections,
    FlinkSettings,
    env_flag,
    env_int,
    env_text,
)

ROOT = Path(__file__).resolve().parents[1]
# The folders that are the installed package (pyproject.toml's package-dir); integration/ is
# the test harness and reads its own ports.
PACKAGE = ("liveagg", "combiners", "engine", "pipelines", "runners", "transforms")


def test_blank_is_unset_and_values_lose_their_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_FLINK_MASTER", "  ")
    monkeypatch.setenv("LIVEAGG_FLINK_VERSION", " 1.20 ")
    settings = FlinkSettings()
    assert (settings.master, settings.version) == ("[local]", "1.20")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_HOSTS", "a, b,")
    assert Connections().cassandra_hosts == ("a", "b")
    monkeypatch.setenv("LIVEAGG_CASSANDRA_HOSTS", "")
    assert Connections().cassandra_hosts == ("127.0.0.1",)
    assert env_text("LIVEAGG_NOT_SET_ANYWHERE", "x") == "x"


def test_a_bad_value_names_the_variable_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEAGG_CASSANDRA_PORT", "cql")
    with pytest.raises(ValueError, match=r"^LIVEAGG_CASSANDRA_PORT='cql' is not an integer, e\.g"):
        Connections()
    monkeypatch.setenv("LIVEAGG_SOME_FLAG", "perhaps")
    with pytest.raises(ValueError, match=r"^LIVEAGG_SOME_FLAG='perhaps' is not true or false"):
        env_flag("LIVEAGG_SOME_FLAG", True)
    monkeypatch.setenv("LIVEAGG_SOME_FLAG", "Off")
    assert env_flag("LIVEAGG_SOME_FLAG", True) is False
    monkeypatch.setenv("LIVEAGG_SOME_INT", " 7 ")
    assert env_int("LIVEAGG_SOME_INT", 1) == 7


def test_the_password_is_taken_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAGG_CASSANDRA_PASSWORD", " spaced pw ")
    password = Connections().cassandra_password
    assert password is not None and password.reveal() == " spaced pw "


def test_each_profile_is_its_runner_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEAGG_FLINK_WORKER_POOL", "pool:50000")
    monkeypatch.setenv("LIVEAGG_SPARK_MASTER", "local[4]")
    monkeypatch.setenv("LIVEAGG_PRISM_LOCATION", "/opt/prism")
    assert FlinkProfile().worker_pool == "pool:50000"
    assert FlinkProfile().environment_type == "external"
    assert SparkProfile().master == "local[4]"
    assert PrismProfile().location == "/opt/prism"


def _sources(folders: tuple[str, ...]) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = re.compile(r"os\.environ|os\.getenv|getenv\(")
    found = [
        str(path.relative_to(ROOT))
        for path in _sources(PACKAGE)
        if path != ROOT / "liveagg" / "settings.py" and readers.search(path.read_text())
    ]
    assert found == []


def test_every_variable_the_command_line_names_is_read_by_the_settings() -> None:
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions if a.choices)  # type: ignore[union-attr]
    help_text = run.choices["run"].format_help()
    named = set(re.findall(r"LIVEAGG_[A-Z0-9_]+", help_text.replace("\n", " ")))
    settings = (ROOT / "liveagg" / "settings.py").read_text()
    assert named, "the help names no variable"
    unknown = {
        name
        for name in named
        if f'"{name}"' not in settings and not name.startswith(KAFKA_CONFIG_ENV_PREFIX)
    }
    assert unknown == set()
