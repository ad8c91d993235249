"""The ``liveagg`` command line: exit codes and the ``FILE: $.path: message`` contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples.custom_combiners import RangeFn
from liveagg.cli import main
from liveagg.engine.compiled import RunContext, check_run
from liveagg.errors import ViewErrors
from liveagg.loader import parse_view

ROOT = Path(__file__).resolve().parents[1]
VIEW = {
    "name": "totals",
    "event_time": {"field": "ts"},
    "grouping_cols": ["k"],
    "window": {"size": "1m"},
    "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
}


def test_validate_examples_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "view_schemas" / "examples")]) == 0
    assert capsys.readouterr().out == ""


def test_validate_prints_file_path_message_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(VIEW))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**VIEW, "name": "Totals", "window": {"size": "1 minute"}}))
    assert main(["validate", str(good), str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{bad}: $.name: ") for line in lines)
    assert any(line.startswith(f"{bad}: $.window.size: ") for line in lines)
    assert not any(line.startswith(str(good)) for line in lines)


def test_run_writes_rows_and_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = tmp_path / "v.json"
    view.write_text(json.dumps(VIEW))
    data = tmp_path / "in.jsonl"
    data.write_text(
        "\n".join(
            [
                '{"k": "a", "ts": "2024-01-01T00:00:10Z"}',
                '{"k": "a", "ts": "2024-01-01T00:00:50Z"}',
                '{"k": "b", "ts": "2024-01-01T00:01:10Z"}',
                "not json",
                '{"k": "b"}',
            ]
        )
    )
    out = tmp_path / "out"
    assert main(["run", "--views", str(view), "--input", str(data), "--output", str(out)]) == 0
    rows = [
        json.loads(line)
        for path in sorted((out / "totals").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert [(r["k"], r["window_start"], r["n"]) for r in rows] == [
        ("a", "2024-01-01T00:00:00Z", 2),
        ("b", "2024-01-01T00:01:00Z", 1),
    ]
    letters = [
        json.loads(line)
        for path in (out / "_dead_letter").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(d["reason"] for d in letters) == ["missing_event_time", "not_json"]
    summary = capsys.readouterr().out
    assert "view totals: 2 rows" in summary
    assert "dead letters: 2" in summary


def test_run_without_input_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = tmp_path / "v.json"
    view.write_text(json.dumps(VIEW))
    assert main(["run", "--views", str(view)]) == 2  # a bad command line
    assert "--input" in capsys.readouterr().err


def test_run_with_an_unbound_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = tmp_path / "v.json"
    view.write_text(json.dumps({**VIEW, "source": "clicks"}))
    assert main(["run", "--views", str(view), "--input", f"events={view}"]) == 1
    err = capsys.readouterr().err
    assert f"{view}: $.source: " in err
    assert "--input clicks=PATH" in err


def test_help_describes_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--views", "--input", "--output", "--runner", "--streaming"):
        assert option in text


@pytest.mark.parametrize("command", ["run", "rekey"])
def test_an_unbounded_read_on_direct_is_refused_for_a_streaming_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Beam's Python engine fires a window's timers before the watermark passes its end on
    a live stream (a window of two messages 15 s apart gave ON_TIME n=1, then LATE n=1 from
    nothing), so --unbounded asks for Prism or Flink, before any broker is reached."""
    view = tmp_path / "v.json"
    view.write_text(json.dumps({**VIEW, "emit": {"early": "10s"}}))
    source = ["--kafka-topic", "t"] if command == "run" else ["--intermediate-topic", "t"]
    args = [command, "--views", str(view), *source, "--kafka-bootstrap", "127.0.0.1:1"]
    assert main([*args, "--output", str(tmp_path / "out"), "--unbounded"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("<command line>: $.unbounded: --unbounded needs a streaming runner")
    assert "--runner prism" in err and "--runner flink" in err and len(err.splitlines()) == 1


EXAMPLES = ROOT / "view_schemas" / "examples"
#: The end of every refusal of the streaming window operator (pipelines/compile.py).
ON_BOUNDED = (
    "yet; run the view on the bounded path (files, or a Kafka read without --unbounded; no "
    "--streaming), or "
)


@pytest.mark.parametrize(
    "level", [["run", "--kafka-topic", "t", "--intermediate-topic", "i"], ["rekey"]]
)
def test_a_global_window_is_refused_in_a_streaming_two_level_run(
    level: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """What the streaming operator does not do yet is refused before anything runs (the
    bootstrap servers are never reached), at level 1 and level 2 alike: a global window in
    shards. The cumulative view, milestones and ``emit.eager`` are not refused."""
    posts, daily = EXAMPLES / "post_engagement.json", EXAMPLES / "ad_daily_spend.json"
    where = ["--intermediate-topic", "t"] if level == ["rekey"] else []
    args = [*level, "--views", str(posts), str(daily), *where, "--output", "out"]
    assert main([*args, "--kafka-bootstrap", "127.0.0.1:1", "--unbounded"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{posts}: $.window.type: view 'post_engagement': the streaming window operator "
        "(an unbounded Kafka read) does not keep global windows in a two-level run "
        f"{ON_BOUNDED}run it in one level",
    ]


def _lines(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _final_panes(rows: list[dict]) -> dict[tuple, dict]:
    """Per window (None for the global window's rows) the row with the highest pane index."""
    final: dict[tuple, dict] = {}
    for row in rows:
        where = (row.get("window_start"), row.get("window_end"))
        if where not in final or row["pane_index"] > final[where]["pane_index"]:
            final[where] = row
    return final


@pytest.mark.parametrize(
    "window",
    [
        {"window": {"type": "cumulative", "size": "1d", "step": "6h"}},
        {"window": {"type": "global"}, "state_ttl": "1h", "emit": {"early": "1m"}},
    ],
    ids=["cumulative", "global"],
)
def test_a_streamed_running_counter_ends_as_the_bounded_run_does(
    window: dict, tmp_path: Path
) -> None:
    """``--streaming`` runs cumulative and global views on the operator: each window's last
    pane is the bounded run's row, and the same milestones fire, once per (key, window or
    day, threshold). Bounded input keeps every key of a global window to its ON_TIME row,
    whatever its ``state_ttl``, as the bounded path does."""
    counter = {**VIEW, **window, "milestones": [{"column": "n", "at": [1, 2, 3]}]}
    view = tmp_path / "counter.json"
    view.write_text(json.dumps(counter))
    events = tmp_path / "events.jsonl"
    times = ["2024-01-01T00:00:10Z", "2024-01-01T07:00:00Z", "2024-01-01T13:00:00Z"]
    events.write_text("".join(f'{{"k": "a", "ts": "{t}"}}\n' for t in [*times, times[0]]))
    streamed, bounded = tmp_path / "streamed", tmp_path / "bounded"
    args = ["run", "--views", str(view), "--input", str(events), "--output"]
    assert main([*args, str(streamed), "--streaming"]) == 0
    assert main([*args, str(bounded)]) == 0
    final = _final_panes(_lines(streamed / "totals"))
    assert {w: r["n"] for w, r in final.items()} == {
        w: r["n"] for w, r in _final_panes(_lines(bounded / "totals")).items()
    }
    assert len(final) == (4 if "step" in counter["window"] else 1)
    ids = sorted(e["milestone_id"] for e in _lines(streamed / "_milestones"))
    assert ids == sorted(e["milestone_id"] for e in _lines(bounded / "_milestones"))
    assert len(ids) == 3


def test_only_a_sharded_global_window_is_refused_on_the_streaming_operator() -> None:
    """The operator fires milestones and eager panes and keeps cumulative and global
    windows; a global window in shards (a two-level run, ``hot_key_fanout``) is refused."""
    counters = {
        **VIEW,
        "emit": {"early": "10s", "eager": {"column": "n", "below": 10}},
        "milestones": [{"column": "n", "at": [10]}],
    }
    daily = counters | {"window": {"type": "cumulative", "size": "1d", "step": "1h"}}
    running = counters | {"window": {"type": "global"}, "state_ttl": "1d"}
    views = [parse_view(v) for v in (counters, daily, running)]
    check_run(views, RunContext("--streaming"))
    check_run(views[:2], RunContext("--streaming", level=1))
    with pytest.raises(ViewErrors, match=r"\$\.window\.type: .* global windows in a two-level"):
        check_run(views, RunContext("--streaming", level=1))
    hot = parse_view(running | {"hot_key_fanout": 4})
    with pytest.raises(ViewErrors, match=r"\$\.hot_key_fanout: .* remove hot_key_fanout$"):
        check_run([hot], RunContext("--streaming"))
    check_run([hot], RunContext())  # the bounded path keeps it


def test_rekey_without_kafka_names_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LIVEAGG_KAFKA_BOOTSTRAP", raising=False)
    view = tmp_path / "v.json"
    view.write_text(
        '{"name": "v", "event_time": {"field": "ts"}, "grouping_cols": [], '
        '"window": {"size": "1m"}, "aggregation_info": '
        '[{"aggregation": "count", "aggregated_col_name": "n"}]}'
    )
    code = main(["rekey", "--views", str(view), "--intermediate-topic", "partials"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "<command line>: $: --intermediate-topic partials: no Kafka bootstrap servers; give "
        "--kafka-bootstrap HOST:PORT or set LIVEAGG_KAFKA_BOOTSTRAP"
    )


@pytest.mark.parametrize(
    ("option", "what"),
    [
        ("--dead-letter-topic", "dead letters to topic 'topic'"),
        ("--intermediate-topic", "partials to --intermediate-topic 'topic'"),
    ],
)
def test_a_topic_option_without_kafka_names_the_option(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    what: str,
) -> None:
    """It failed with a traceback; a view's Kafka sink already said this in one line."""
    monkeypatch.delenv("LIVEAGG_KAFKA_BOOTSTRAP", raising=False)
    view = tmp_path / "v.json"
    view.write_text(json.dumps(VIEW))
    data = tmp_path / "in.jsonl"
    data.write_text('{"k": "a", "ts": "2024-01-01T00:00:10Z"}\n')
    args = ["run", "--views", str(view), "--input", str(data), "--output", str(tmp_path / "o")]
    assert main([*args, option, "topic"]) == 2
    assert capsys.readouterr().err == (
        f"<command line>: $.{option[2:].replace('-', '_')}: {what}: no Kafka bootstrap "
        "servers; set LIVEAGG_KAFKA_BOOTSTRAP or pass them in the run's connection options\n"
    )


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--direct-num-workers", "-3", "an integer of at least 0"),
        ("--max-records", "-1", "an integer of at least 0"),
        ("--parallelism", "0", "an integer of at least 1"),
        ("--idle-timeout-s", "nan", "a number of seconds, 0 or more"),
        ("--idle-timeout-s", "-1", "a number of seconds, 0 or more"),
        ("--checkpoint-interval-s", "inf", "a number of seconds, 0 or more"),
        ("--report-every-s", "nan", "a number of seconds, 0 or more"),
    ],
)
def test_a_numeric_option_out_of_its_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    """Some failed the run with a traceback (-3 workers, nan or inf seconds), others were
    taken silently (a negative timeout)."""
    view = tmp_path / "v.json"
    view.write_text(json.dumps(VIEW))
    args = ["run", "--views", str(view), "--input", str(view), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as info:
        main([*args, option, value])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"liveagg run: error: argument {option}: expected {expected}, got {value!r}"
    )


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["run", "--views", "v"], False),
        (["-v", "run", "--views", "v"], True),
        (["run", "-v", "--views", "v"], True),
        (["run", "--views", "v", "--verbose"], True),
        (["rekey", "--views", "v", "--intermediate-topic", "t", "-v"], True),
        (["-v", "rekey", "--views", "v", "--intermediate-topic", "t"], True),
    ],
)
def test_verbose_is_taken_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    from liveagg.cli import build_parser

    args, extra = build_parser().parse_known_args(argv)
    assert (args.verbose, extra) == (verbose, [])


@pytest.mark.parametrize(
    ("item", "bound"),
    [
        ("events=in/*.jsonl", ("events", "in/*.jsonl")),
        ("page-views=in.jsonl", ("page-views", "in.jsonl")),  # a source need not be an identifier
        ("in/date=2024-01-01/*.jsonl", (None, "in/date=2024-01-01/*.jsonl")),
        ("=in.jsonl", (None, "=in.jsonl")),
        ("in.jsonl", (None, "in.jsonl")),
    ],
)
def test_a_binding_names_a_source_as_views_spell_it(
    item: str, bound: tuple[str | None, str]
) -> None:
    from liveagg.pipelines.run import _split_binding

    assert _split_binding(item) == bound


class NaiveRange(RangeFn):
    """A custom aggregation whose ``coerce`` fails on a value it did not expect, as user code
    does, instead of raising ``InputError``."""

    def coerce(self, value: Any) -> float:
        return float(value)


@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_a_custom_coerce_that_fails_on_a_value_dead_letters_that_message(
    tmp_path: Path, mode: list[str]
) -> None:
    view = tmp_path / "v.json"
    custom = {"aggregation": "custom", "col_name": "v", "aggregated_col_name": "r"}
    custom["params"] = {"combine_fn": "tests.test_cli:NaiveRange"}
    counted = {"aggregation": "count", "aggregated_col_name": "n"}
    view.write_text(json.dumps({**VIEW, "aggregation_info": [custom, counted]}))
    data = tmp_path / "in.jsonl"
    values = [1, "oops", 4.5, [2]]
    data.write_text(
        "".join(
            json.dumps({"ts": f"2024-01-01T00:00:0{i}Z", "k": "a", "v": v}) + "\n"
            for i, v in enumerate(values)
        )
    )
    out = tmp_path / "out"
    run = ["run", "--views", str(view), "--input", str(data), "--output", str(out), *mode]
    assert main(run) == 0
    [row] = [json.loads(line) for p in (out / "totals").glob("*.jsonl") for line in p.open()]
    assert (row["r"], row["n"]) == (3.5, 2)
    letters = [
        json.loads(line) for p in (out / "_dead_letter").glob("*.jsonl") for line in p.open()
    ]
    assert sorted((d["reason"], d["source"]["line"]) for d in letters) == [
        ("aggregation_error", 2),
        ("aggregation_error", 4),
    ]
    details = sorted(d["detail"] for d in letters)
    assert details[0].startswith("v='oops': 'r': coerce raised ValueError: could not convert")
    assert details[1].startswith("v=[2]: 'r': coerce raised TypeError: ")


def test_validate_refuses_what_a_run_would_refuse_of_the_views_own_sinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule that depends on the view files alone fails CI's ``liveagg validate``, not the
    deployment: a Cassandra table two views share, two columns mapped to one column."""
    table = {"type": "cassandra", "keyspace": "ks", "table": "shared"}
    first = tmp_path / "a.json"
    first.write_text(json.dumps({**VIEW, "name": "a", "sinks": [table]}))
    second = tmp_path / "b.json"
    second.write_text(
        json.dumps({**VIEW, "name": "b", "sinks": [{"type": "kafka", "topic": "t"}, table]})
    )
    clash = tmp_path / "c.json"
    clash_view = {**VIEW, "name": "c", "grouping_cols": ["a-b", "a_b"]}
    clash.write_text(json.dumps({**clash_view, "sinks": [{**table, "table": "c"}]}))
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{second}: $.sinks[1]: views 'a' and 'b' both write to Cassandra table ks.shared, where "
        "each would overwrite the other's rows: a table holds one view. Give each view its own "
        'table ("table" in its own sink, or a --sink without "table", which writes each view to '
        "the table of its name)",
        f"{clash}: $.sinks[0]: view 'c': 'a-b' and 'a_b' both map to Cassandra column 'a_b'; "
        "rename one of them",
    ]
    second.unlink()
    clash.unlink()
    assert main(["validate", str(tmp_path)]) == 0


class FragileRange(RangeFn):
    """A custom aggregation whose ``extract_output`` fails for some groups, as user code
    does; ``declared`` is the type it says it gives."""

    def __init__(self, declared: str = "double") -> None:
        super().__init__()
        self.declared = declared

    def extract_output(self, accumulator: Any) -> float | None:
        value = super().extract_output(accumulator)
        if value is not None and value > 2:
            raise ZeroDivisionError("too wide")
        return value

    def output_type(self) -> str:
        return self.declared


@pytest.mark.parametrize("declared", ["double", "json"])
@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_a_custom_extract_that_fails_for_a_group_nulls_its_column_with_a_dead_letter(
    tmp_path: Path, mode: list[str], declared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    view = tmp_path / "v.json"
    custom = {"aggregation": "custom", "col_name": "v", "aggregated_col_name": "r"}
    custom["params"] = {"combine_fn": "tests.test_cli:FragileRange", "declared": declared}
    counted = {"aggregation": "count", "aggregated_col_name": "n"}
    view.write_text(json.dumps({**VIEW, "aggregation_info": [custom, counted]}))
    data = tmp_path / "in.jsonl"
    values = [("a", 1), ("a", 2), ("b", 1), ("b", 9)]  # ranges 1 and 8: b's fails
    data.write_text(
        "".join(
            json.dumps({"ts": f"2024-01-01T00:00:0{i}Z", "k": k, "v": v}) + "\n"
            for i, (k, v) in enumerate(values)
        )
    )
    out = tmp_path / "out"
    run = ["run", "--views", str(view), "--input", str(data), "--output", str(out), *mode]
    assert main(run) == 0
    rows = [json.loads(line) for p in (out / "totals").glob("*.jsonl") for line in p.open()]
    assert sorted((r["k"], r["r"], r["n"]) for r in rows) == [("a", 1, 2), ("b", None, 2)]
    [letter] = [
        json.loads(line) for p in (out / "_dead_letter").glob("*.jsonl") for line in p.open()
    ]
    assert letter["reason"] == "extract_error"
    assert letter["detail"] == (
        "column 'r' (custom) raised ZeroDivisionError: too wide in extract_output; "
        "the row holds null there"
    )
    assert json.loads(letter["payload"])["k"] == "b"
    # A result's dead letter, apart from the messages: every message was used.
    assert "4 messages = 4 used + 0 filtered out + 0 dead letters" in capsys.readouterr().out


@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_no_milestone_fires_from_a_value_its_row_holds_as_null(
    tmp_path: Path, mode: list[str]
) -> None:
    """An int sum beyond the range of a double is written as null (an overflow): a milestone
    must not announce the value that no row shows."""
    view = tmp_path / "v.json"
    summed = {"aggregation": "sum", "col_name": "v", "aggregated_col_name": "s"}
    counted = {"aggregation": "count", "aggregated_col_name": "n"}
    milestones = [{"column": "s", "at": [1]}, {"column": "n", "at": [2]}]
    view.write_text(
        json.dumps({**VIEW, "aggregation_info": [summed, counted], "milestones": milestones})
    )
    data = tmp_path / "in.jsonl"
    big = "9" + "0" * 307  # a double holds it; twice it, none does
    data.write_text(
        "".join(f'{{"ts": "2024-01-01T00:00:0{i}Z", "k": "a", "v": {big}}}\n' for i in range(2))
    )
    out = tmp_path / "out"
    run = ["run", "--views", str(view), "--input", str(data), "--output", str(out), *mode]
    assert main(run) == 0
    [row] = [json.loads(line) for p in (out / "totals").glob("*.jsonl") for line in p.open()]
    assert (row["s"], row["n"]) == (None, 2)
    events = [json.loads(line) for line in (out / "_milestones" / "totals.jsonl").open()]
    assert [(e["column"], e["threshold"]) for e in events] == [("n", 2)]
