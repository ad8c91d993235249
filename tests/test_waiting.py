"""The polling helper of the integration tests, on a fake clock, and its transient errors."""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest

from liveagg.runners.flink_rest import FlinkRestError
from tests.support.waiting import (
    cassandra_schema_settling,
    cassandra_table_missing,
    cassandra_table_opening,
    either,
    eventually,
    flink_job_starting,
    kafka_metadata_settling,
    kafka_records,
    retrying,
)

ck = pytest.importorskip("confluent_kafka")
pytest.importorskip("cassandra")
from cassandra import InvalidRequest, Unavailable  # noqa: E402
from cassandra.cluster import NoHostAvailable  # noqa: E402
from cassandra.protocol import ServerError  # noqa: E402


class Clock:
    """A fake monotonic clock; ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Transient(Exception):
    pass


class Answers:
    """A probe that raises or returns its answers in turn."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _transient(error: BaseException) -> bool:
    return isinstance(error, Transient)


def test_eventually_returns_once_the_condition_holds() -> None:
    clock = Clock()
    probe = Answers(AssertionError("1 of 3"), Transient("starting"), AssertionError("2 of 3"), 3)
    got = eventually(
        probe,
        what="rows",
        timeout_s=10,
        every_s=0.5,
        transient=_transient,
        clock=clock,
        sleep=clock.sleep,
    )
    assert got == 3
    assert probe.calls == 4
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_eventually_fails_at_the_deadline_with_the_last_reason() -> None:
    clock = Clock()
    probe = Answers(*[AssertionError(f"{i} rows") for i in range(10)])
    with pytest.raises(AssertionError, match=r"^rows: not within 2 s: 4 rows$") as info:
        eventually(probe, what="rows", timeout_s=2, every_s=0.5, clock=clock, sleep=clock.sleep)
    assert probe.calls == 5  # at 0, 0.5, 1, 1.5 and 2 s
    assert str(info.value.__cause__) == "4 rows"
    probe = Answers(*[Transient("starting")] * 3)
    with pytest.raises(AssertionError, match=r"not within 1 s: Transient: starting"):
        eventually(
            probe,
            what="x",
            timeout_s=1,
            every_s=0.5,
            transient=_transient,
            clock=clock,
            sleep=clock.sleep,
        )


def test_other_errors_fail_at_once() -> None:
    clock = Clock()
    probe = Answers(ValueError("broken"), 1)
    with pytest.raises(ValueError, match="broken"):
        eventually(probe, what="x", timeout_s=10, transient=_transient, clock=clock)
    assert probe.calls == 1
    probe = Answers(AssertionError("wrong"), 1)
    with pytest.raises(AssertionError, match=r"^wrong$"):  # retrying() has no condition
        retrying(probe, what="x", transient=_transient, clock=clock, sleep=clock.sleep)
    assert probe.calls == 1


def test_retrying_waits_out_transient_errors_only() -> None:
    clock = Clock()
    probe = Answers(Transient("a"), Transient("b"), "rows")
    assert retrying(probe, what="x", transient=_transient, clock=clock, sleep=clock.sleep) == "rows"
    assert probe.calls == 3
    probe = Answers(*[Transient("still")] * 200)
    with pytest.raises(AssertionError, match="x: not within 60 s: Transient: still"):
        retrying(probe, what="x", transient=_transient, clock=clock, sleep=clock.sleep)


# --- the services' transient errors ----------------------------------------------------------

UNKNOWN_CF = ServerError(
    0, "java.lang.IllegalArgumentException: Unknown CF d7a2d500-eeff-11f1-9e07-110b63f719b5", {}
)
#: As cassandra-driver 3.29 raises them, from the shared node while a table was being created.
MISSING_TABLE = InvalidRequest(
    'Error from server: code=2200 [Invalid query] message="table t does not exist"'
)
MISSING_KEYSPACE = InvalidRequest(
    'Error from server: code=2200 [Invalid query] message="keyspace ks does not exist"'
)
OLD_MISSING_TABLE = InvalidRequest(
    'Error from server: code=2200 [Invalid query] message="unconfigured table t"'
)


@pytest.mark.parametrize(
    ("error", "opening", "missing"),
    [
        (NoHostAvailable("no host", {"127.0.0.1:19042": UNKNOWN_CF}), True, False),
        (UNKNOWN_CF, True, False),
        (MISSING_TABLE, False, True),
        (MISSING_KEYSPACE, False, True),
        (OLD_MISSING_TABLE, False, True),
        (
            NoHostAvailable("no host", {"a": UNKNOWN_CF, "b": ConnectionRefusedError()}),
            False,
            False,
        ),
        (NoHostAvailable("no host", {}), False, False),
        (ServerError(0, "java.lang.NullPointerException", {}), False, False),
        (InvalidRequest('message="Undefined column name views"'), False, False),
        (Unavailable("replica down"), False, False),
    ],
)
def test_cassandra_states_of_a_table_being_created(
    error: BaseException, opening: bool, missing: bool
) -> None:
    assert cassandra_table_opening(error) is opening
    assert cassandra_table_missing(error) is missing
    assert cassandra_schema_settling(error) is (opening or missing)


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, True),
        (ck.KafkaError.LEADER_NOT_AVAILABLE, True),
        (ck.KafkaError._UNKNOWN_TOPIC, True),
        (ck.KafkaError._UNKNOWN_PARTITION, True),
        (ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
        (ck.KafkaError._MSG_TIMED_OUT, False),
    ],
)
def test_kafka_states_of_a_new_topic(code: int, transient: bool) -> None:
    assert kafka_metadata_settling(ck.KafkaException(ck.KafkaError(code))) is transient
    assert kafka_metadata_settling(ck.KafkaError(code)) is transient
    assert kafka_metadata_settling(ValueError(str(code))) is False


class FakeMessage:
    def __init__(self, value: bytes | None = None, error: int | None = None) -> None:
        self._value, self._error = value, None if error is None else ck.KafkaError(error)

    def error(self) -> Any:
        return self._error

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0


def test_kafka_records_skip_ends_and_transient_errors_only() -> None:
    batch = [
        FakeMessage(b"a"),
        FakeMessage(error=ck.KafkaError._PARTITION_EOF),
        FakeMessage(error=ck.KafkaError.UNKNOWN_TOPIC_OR_PART),
        FakeMessage(b"b"),
    ]
    assert [m.value() for m in kafka_records(batch)] == [b"a", b"b"]
    bad = [FakeMessage(b"a"), FakeMessage(error=ck.KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    with pytest.raises(AssertionError, match=r"t \[0\]: .*TOPIC_AUTHORIZATION_FAILED"):
        kafka_records(bad)


def _rest_error(code: int, body: bytes = b"") -> FlinkRestError:
    http = urllib.error.HTTPError("http://flink/jobs/x", code, "error", {}, None)  # type: ignore[arg-type]
    try:
        raise FlinkRestError(f"GET http://flink/jobs/x: {code} {body!r}") from http
    except FlinkRestError as e:
        return e


def test_flink_states_of_a_starting_job() -> None:
    assert flink_job_starting(_rest_error(404))
    assert flink_job_starting(_rest_error(503))
    assert not flink_job_starting(_rest_error(500))
    assert not flink_job_starting(_rest_error(400))
    initializing = _rest_error(500, b'{"errors": ["... JobManager is initializing ..."]}')
    assert flink_job_starting(initializing)
    refused = FlinkRestError("GET http://flink/jobs/x: [Errno 111] Connection refused")
    assert not flink_job_starting(refused)
    assert not flink_job_starting(RuntimeError("404"))
    both = either(flink_job_starting, cassandra_schema_settling)
    assert both(_rest_error(404)) and both(MISSING_TABLE) and not both(ValueError())
