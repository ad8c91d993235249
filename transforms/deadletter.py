"""Dead letters: every message a view cannot use, with the reason, never only a log line.

A dead letter is a flat row with a fixed schema, so that it can be written by any sink::

    {"view": "cdn" | null, "reason": "invalid_event_time", "detail": "ts='x' is not ...",
     "payload": "<the original message text>", "source": {...} | null}

``view`` is null when no view could look at the message (it is not JSON, say). ``source``
locates the message: ``{"topic", "partition", "offset", ...}`` for Kafka, ``{"file", "line"}``
for files.

Each dead letter increments the Beam counter ``liveagg/dead_letter/<reason>``, and a second
one per view: ``liveagg/dead_letter/<view>/<reason>`` (``_input`` when no view) for a
message, ``liveagg/result_dead_letter/<view>/<reason>`` for a result that could not be
written (:data:`RESULT_REASONS`). Kept apart, the per-view message counters reconcile with the
messages a view was given (``RunReport.reconcile``).
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from functools import cache
from typing import Any

import orjson
from apache_beam.metrics import Metrics

TAG = "dead_letter"
NAMESPACE = "liveagg"
#: The per-view name of dead letters that no view could look at.
INPUT = "_input"

#: Every reason code liveagg itself emits; combiners may add their own ``InputError`` reasons.
REASONS = {
    "not_json": "the message is not valid JSON (the detail gives the parser's reason)",
    "not_an_object": "the message is JSON but not an object",
    "missing_event_time": "the event-time field is missing or null",
    "invalid_event_time": "the event-time field cannot be read in the view's format",
    "event_time_out_of_range": (
        "the event time, or a bound of one of its windows, is outside "
        "0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999Z"
    ),
    "not_scalar": "a grouping column or value holds an object or a list",
    "not_numeric": "a numeric aggregation got a value that is not a number",
    "not_finite": "a numeric aggregation got NaN, an infinity or an integer beyond a double",
    "too_late": "the message arrived after the allowed lateness of all its windows had passed",
    "aggregation_error": (
        "a custom aggregation's coerce raised an error other than InputError on the message's "
        "value (the detail names the aggregation and the error)"
    ),
    "overflow": "a result (a sum, a variance) is beyond the double range; its row holds null",
    "extract_error": (
        "a custom aggregation's extract_output raised for a group; its row holds null there"
    ),
    "wrong_type": (
        "a custom aggregation's result is not of the type it declares; its row holds null"
    ),
    "too_large": "a row is larger than its sink stores (a Cassandra key over 64 KiB, say)",
    "empty_key": "a row's Cassandra key is one empty value (a null or empty grouping value)",
    "not_envelope": "rekey: the intermediate-topic message is not a level-1 envelope",
    "incompatible_envelope": "rekey: the envelope comes from another definition of the view",
    "bad_envelope": "rekey: the envelope's window, key or accumulator does not fit the view",
}

#: Reasons about a result, not a message: no single message is to blame, so they are counted
#: apart from the view's message accounting (``result_dead_letter/<view>/<reason>``).
RESULT_REASONS = frozenset({"overflow", "wrong_type", "extract_error", "too_large", "empty_key"})


@cache
def counter(name: str) -> Any:
    """The Beam counter ``liveagg/<name>``, made once per process."""
    return Metrics.counter(NAMESPACE, name)


def dead_letter(
    payload: Any, view: str | None, reason: str, detail: str, source: Any = None
) -> dict[str, Any]:
    """Build a dead-letter row and count it.

    ``source`` is a Kafka record's metadata dict, a file line's
    :data:`~liveagg.transforms.sources.files.Where` (resolved here to ``{"file", "line"}``,
    which may count the file's lines, so only for lines that are dead-lettered), or None.
    """
    counter(f"dead_letter/{reason}").inc()
    family = "result_dead_letter" if reason in RESULT_REASONS else "dead_letter"
    counter(f"{family}/{view or INPUT}/{reason}").inc()
    if isinstance(payload, bytes | bytearray):
        payload = bytes(payload).decode("utf-8", errors="replace")
    if type(source) is tuple:
        from liveagg.transforms.sources.files import locate

        source = locate(source)
    return {"view": view, "reason": reason, "detail": detail, "payload": payload, "source": source}


def result_dead_letter(
    row: Mapping[str, Any], values: Container[str], view: str, reason: str, detail: str
) -> dict[str, Any]:
    """A dead letter about a result row (:data:`RESULT_REASONS`): no message is to blame, so
    its payload is the row without its ``values`` columns (its key, window and pane) as JSON."""
    where = {k: v for k, v in row.items() if k not in values}
    try:
        payload = orjson.dumps(where).decode()
    except TypeError:  # a grouping value beyond 64 bits
        payload = json.dumps(where, separators=(",", ":"), ensure_ascii=False)
    return dead_letter(payload, view, reason, detail)
