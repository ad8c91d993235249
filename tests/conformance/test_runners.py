"""One conformance suite for every runner: the same views over the same input with bad lines
give the same rows and dead letters on direct, prism, flink and spark.

The views are the examples and the end-to-end suite's extra views: every aggregation, fixed,
sliding and session windows, grouping sets, granularities, filters and derived columns. One
pipeline per runner and mode runs all of them over one generated input (3,000 lines, 1% bad,
out of order by up to 30 s):

* bounded, from a JSON Lines file, on every runner;
* bounded, from a three-partition Kafka topic holding the same lines, on every runner;
* streaming (``--unbounded``) from that topic, on prism and flink only (the direct runner
  refuses ``--unbounded``; streaming on Spark is not tested), rows and dead letters to
  Kafka topics, with the views the streaming window operator takes (``check_run``: all
  of them, in one level); its milestone events go to a topic too, and the ids there must be
  those the oracle's final values reach.
  Every view gets an allowed lateness of 10 minutes here, longer than the input's disorder, so
  that no line is ``too_late`` and the final pane of each window holds all its lines.

Each run's rows must equal the DuckDB oracle's (``tests/support/compare.py``: exact, or within
a sketch's error bound), and every run's rows must equal the direct runner's bounded rows
column for column, except the columns whose value depends on the order in which partial
aggregates merge (:data:`ORDER_DEPENDENT`). Dead letters must be the same multiset of
``(view, reason, detail, payload)`` everywhere, and a bounded run's milestone events exactly
those the oracle's final values reach.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.services import FlinkConnection, KafkaConnection, SparkConnection
from liveagg.engine.compiled import RunContext, check_run
from liveagg.errors import ViewErrors
from liveagg.loader import load_views
from liveagg.spec import ViewSpec
from tests.conformance.streams import Topic, ctrl_c, running, unique, while_running
from tests.pipelines.test_e2e import EXTRA_VIEWS
from tests.support.cli import ROOT, liveagg, rows_in
from tests.support.compare import (
    assert_milestones_match,
    assert_rows_match,
    latest_panes,
    row_key,
    without_panes,
)
from tests.support.datagen import generate
from tests.support.kafka_topics import create_topics, produce
from tests.support.oracle import expected_milestones, expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXAMPLES = ROOT / "view_schemas" / "examples"
LINES = 3_000
PARTITIONS = 3
STREAMING_LATENESS = "10m"
CONVERGE_TIMEOUT_S = 300.0
ORDER_DEPENDENT = frozenset({"approx_quantiles", "hll_sketch"})
"""Aggregations whose result depends on the order of inputs and merges: a KLL sketch compacts
at random once it holds more than ``k`` items, and a serialized HLL sketch lists its coupons
in arrival order (its estimate does not change). The oracle bounds both on every runner."""
FLOAT_DIGITS = 12
"""Floats (means, variances) are compared to 12 significant digits: a sum of floats depends on
the order of its terms in the last bits."""


@dataclass(frozen=True)
class Case:
    """The input, the views, and where the Kafka copy of the input is."""

    folder: Path
    events: Path
    view_files: list[Path]
    streaming_view_files: list[Path]
    topic: str

    def views(self, streaming: bool = False) -> list[ViewSpec]:
        return load_views(self.streaming_view_files if streaming else self.view_files)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, kafka: KafkaConnection) -> Case:
    folder = tmp_path_factory.mktemp("conformance")
    events = folder / "events.jsonl"
    generate(events, LINES, seed=41, keys=200, span_s=2 * 3600, bad_fraction=0.01)
    views = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    views += EXTRA_VIEWS
    view_files, streaming_files = [], []
    for view in views:
        for streaming, out in ((False, view_files), (True, streaming_files)):
            body = dict(view, sinks=[])
            if streaming and view["window"].get("type") != "global":  # never late
                body["allowed_lateness"] = STREAMING_LATENESS
            path = folder / ("streaming" if streaming else "bounded") / f"{view['name']}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(orjson.dumps(body))
            if not streaming or _on_the_operator(path):
                out.append(path)
    topic = unique("liveagg-conformance-")
    create_topics(kafka.client_config(), [topic], PARTITIONS)
    produce(kafka.client_config(), topic, events.read_bytes().splitlines())
    return Case(folder, events, view_files, streaming_files, topic)


def _on_the_operator(view_file: Path) -> bool:
    """Whether the streaming window operator runs the view (``check_run``); a view
    the suite made invalid fails here rather than leaving the streaming run unnoticed."""
    views = load_views([view_file])
    try:
        check_run(views, RunContext("an unbounded Kafka read"))
    except ViewErrors:
        return False
    return True


def _runner_args(
    runner: str, request: pytest.FixtureRequest, *, streaming: bool = False
) -> list[str]:
    """``--runner`` and its options; the fixtures a runner needs are asked for here only."""
    if runner == "direct":
        return ["--runner", "direct"]
    if runner == "prism":
        return ["--runner", "prism", "--prism-location", str(request.getfixturevalue("prism"))]
    if runner == "spark":
        spark: SparkConnection = request.getfixturevalue("spark")
        return ["--runner", "spark", "--spark-job-endpoint", spark.job_endpoint]
    flink: FlinkConnection = request.getfixturevalue("flink")
    args = [
        *("--runner", "flink", "--flink-master", flink.master, "--parallelism", "2"),
        *("--flink-job-endpoint", flink.job_endpoint, "--flink-worker-pool", flink.worker_pool),
    ]
    if streaming:
        args += ["--checkpoint-interval-s", "1", "--report-every-s", "0"]
    return args


# --- what is compared ------------------------------------------------------------------------


def _comparable(row: Mapping[str, Any], view: ViewSpec) -> dict[str, Any]:
    """The row without the columns of order-dependent aggregations."""
    drop = {a.output for a in view.aggregations if a.kind in ORDER_DEPENDENT}
    return {k: _rounded(v) for k, v in row.items() if k not in drop}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _by_key(rows: Sequence[Mapping[str, Any]], view: ViewSpec) -> dict[Any, dict[str, Any]]:
    return {row_key(r, view): _comparable(r, view) for r in rows}


def _letters(letters: Sequence[Mapping[str, Any]]) -> Counter:
    """Dead letters as a multiset; ``source`` names the file or Kafka offset, so it is left out."""
    return Counter(
        orjson.dumps([d.get("view"), d.get("reason"), d.get("detail"), d.get("payload")])
        for d in letters
    )


@pytest.fixture(scope="module")
def reference(case: Case) -> dict[str, Any]:
    """The direct runner's bounded run from the file, the rows the others must equal."""
    out = case.folder / "reference"
    liveagg("run", "--views", *map(str, case.view_files), "--input", str(case.events),
            "--output", str(out))  # fmt: skip
    rows = {v.name: rows_in(out / v.name) for v in case.views()}
    return {"rows": rows, "letters": _letters(rows_in(out / "_dead_letter"))}


def test_the_reference_run_equals_the_oracle(case: Case, reference: dict[str, Any]) -> None:
    letters = reference["letters"]
    for view in case.views():
        expected = expected_rows(view, case.events)
        assert expected, f"{view.name}: the input must give rows"
        assert_rows_match(reference["rows"][view.name], expected, view)
    reasons = {orjson.loads(k)[1] for k in letters}
    assert {"not_json", "not_an_object", "missing_event_time", "not_numeric"} <= reasons
    _assert_milestones(case, case.folder / "reference")


def _assert_conforms(
    case: Case,
    reference: dict[str, Any],
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    letters: Counter,
    *,
    streaming: bool = False,
) -> None:
    for view in case.views(streaming):
        actual = rows[view.name]
        expected = expected_rows(view, case.events)
        if streaming:  # the final pane of each window; its timing depends on arrival order
            assert_rows_match(without_panes(actual), without_panes(expected), view)
            assert _by_key(without_panes(actual), view) == _by_key(
                without_panes(reference["rows"][view.name]), view
            ), view.name
        else:
            assert_rows_match(actual, expected, view)
            assert _by_key(actual, view) == _by_key(reference["rows"][view.name], view), view.name
    assert letters == _expected_letters(case, reference, streaming)


def _expected_letters(case: Case, reference: dict[str, Any], streaming: bool) -> Counter:
    """The reference run's dead letters of the input and of the views this mode runs."""
    names = {None, *(v.name for v in case.views(streaming))}
    return Counter({k: n for k, n in reference["letters"].items() if orjson.loads(k)[0] in names})


def _assert_milestones(case: Case, out: Path) -> None:
    """Each view's milestone events under ``out`` are exactly those its oracle rows reach."""
    fired = 0
    for view in (v for v in case.views() if v.milestones):
        expected = expected_milestones(view, expected_rows(view, case.events))
        path = out / "_milestones" / f"{view.name}.jsonl"
        lines = path.read_bytes().splitlines() if path.exists() else []  # none fired
        actual = [orjson.loads(line) for line in lines]
        assert_milestones_match(actual, expected)
        fired += len(actual)
    assert fired, "the input must reach some milestones"


# --- bounded ---------------------------------------------------------------------------------

RUNNERS = [
    "direct",
    "prism",
    pytest.param("flink", marks=pytest.mark.slow),
    pytest.param("spark", marks=pytest.mark.slow),
]


def _bounded_run(
    runner: str,
    source: str,
    source_args: Sequence[str],
    case: Case,
    reference: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """One bounded run of every view on ``runner``, its rows and dead letters checked."""
    out = case.folder / f"{source}-{runner}"
    runner_args = _runner_args(runner, request)  # starts the runner's service: not timed
    t0 = time.monotonic()
    liveagg("run", "--views", *map(str, case.view_files), *source_args, "--output", str(out),
            *runner_args)  # fmt: skip
    print(f"{runner}: bounded from {source} in {time.monotonic() - t0:.1f} s")
    rows = {v.name: rows_in(out / v.name) for v in case.views()}
    _assert_conforms(case, reference, rows, _letters(rows_in(out / "_dead_letter")))
    _assert_milestones(case, out)


@pytest.mark.parametrize("runner", RUNNERS)
def test_bounded_from_files(
    runner: str, case: Case, reference: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    _bounded_run(runner, "files", ["--input", str(case.events)], case, reference, request)


@pytest.mark.parametrize("runner", RUNNERS)
def test_bounded_from_kafka(
    runner: str,
    case: Case,
    reference: dict[str, Any],
    kafka: KafkaConnection,
    request: pytest.FixtureRequest,
) -> None:
    source_args = [
        *("--kafka-topic", case.topic, "--kafka-bootstrap", kafka.bootstrap_servers),
        *("--kafka-start", "earliest", "--kafka-group-id", unique("conformance-")),
    ]
    _bounded_run(runner, "kafka", source_args, case, reference, request)


# --- streaming -------------------------------------------------------------------------------


STOPPED_WITH_CTRL_C = {"prism": 130, "flink": 0}
"""Exit codes after Ctrl-C: an interrupted run's 130, except Flink, where Ctrl-C is how a
streaming job is stopped (README, "Exit codes")."""


@pytest.mark.parametrize("runner", ["prism", pytest.param("flink", marks=pytest.mark.slow)])
def test_streaming_final_panes(
    runner: str,
    case: Case,
    reference: dict[str, Any],
    kafka: KafkaConnection,
    request: pytest.FixtureRequest,
) -> None:
    rows_topic, dead_topic = unique("conformance-rows-"), unique("conformance-dead-")
    milestones_topic = unique("conformance-milestones-")
    create_topics(kafka.client_config(), [rows_topic, dead_topic, milestones_topic], 1)
    views = case.views(streaming=True)
    args = [
        *("run", "--views", *map(str, case.streaming_view_files), "--kafka-topic", case.topic),
        *("--kafka-bootstrap", kafka.bootstrap_servers, "--kafka-start", "earliest"),
        *("--kafka-group-id", unique("conformance-"), "--unbounded", "--idle-timeout-s", "3"),
        *("--sink", orjson.dumps({"type": "kafka", "topic": rows_topic}).decode()),
        *("--dead-letter-topic", dead_topic, "--milestone-topic", milestones_topic),
        *_runner_args(runner, request, streaming=True),
    ]
    expected = {v.name: without_panes(expected_rows(v, case.events)) for v in views}
    # Milestones are delivered at least once: a replayed pane sends an id again.
    expected_ids = {
        e["milestone_id"]
        for v in views
        if v.milestones
        for e in expected_milestones(v, expected_rows(v, case.events))
    }
    assert expected_ids, "the running counters must reach some milestones"
    expected_letters = _expected_letters(case, reference, streaming=True)
    log = case.folder / f"streaming-{runner}.log"
    rows, letters = Topic(kafka, rows_topic), Topic(kafka, dead_topic)
    milestones = Topic(kafka, milestones_topic)
    t0 = time.monotonic()
    try:
        with log.open("wb") as out, running(args, out, subprocess.STDOUT) as proc:

            def converged() -> dict[str, list[Any]]:
                """Every view's final panes equal the oracle's; every dead letter is there."""
                by_view: dict[str, list[Any]] = {v.name: [] for v in views}
                for row in rows.poll():
                    by_view[row["view"]].append(row)
                for view in views:
                    final = without_panes(latest_panes(by_view[view.name], view))
                    assert_rows_match(final, expected[view.name], view)
                assert len(letters.poll()) >= sum(expected_letters.values())
                assert {e["milestone_id"] for e in milestones.poll()} == expected_ids
                return by_view

            by_view = while_running(
                converged,
                proc,
                log,
                what=f"{runner}: the final panes",
                timeout_s=CONVERGE_TIMEOUT_S,
                every_s=3.0,
            )
            converged_s = time.monotonic() - t0
            code = ctrl_c(proc)
        print(f"{runner}: streaming converged in {converged_s:.1f} s")
        text = log.read_text()
        assert code == STOPPED_WITH_CTRL_C[runner], text[-4000:]
        assert "ERROR" not in text and "Traceback" not in text, text[-4000:]
        final = {v.name: latest_panes(by_view[v.name], v) for v in views}
        _assert_conforms(case, reference, final, _letters(letters.poll()), streaming=True)
        timings = Counter(r["pane_timing"] for r in rows.poll())
        assert timings["ON_TIME"] > 0, timings
    finally:
        rows.close()
        letters.close()
        milestones.close()
