"""Dead letters: every message a view cannot use, with the reason, never only a log line.

A dead letter is a flat row with a fixed schema, so that it can be written by any sink::

    {"view": "cdn" | null, "reason": "invalid_event_time", "detail": "ts='x' is not ...",
     "payload": "<the original message text>", "source": {...} | null}

``view`` is null when no view could look at the message (it is not JSON, say).
Each dead letter also increments the Beam counters ``liveagg/dead_letter/<reason>`` and
``liveagg/dead_letter/<view>/<reason>``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from apache_beam.metrics import Metrics

TAG = "dead_letter"
NAMESPACE = "liveagg"

#: Every reason code liveagg itself emits; combiners may add their own ``InputError`` reasons.
REASONS = {
    "not_json": "the message is not valid JSON",
    "not_an_object": "the message is JSON but not an object",
    "missing_event_time": "the event-time field is missing or null",
    "invalid_event_time": "the event-time field cannot be read in the view's format",
    "not_scalar": "a grouping column or value holds an object or a list",
    "not_numeric": "a numeric aggregation got a value that is not a number",
    "not_finite": "a numeric aggregation got NaN or an infinity",
    "too_late": "the message arrived after its window's allowed lateness had passed",
    "not_envelope": "rekey: the intermediate-topic message is not a level-1 envelope",
    "incompatible_envelope": "rekey: the envelope comes from another definition of the view",
    "bad_envelope": "rekey: the envelope's window, key or accumulator does not fit the view",
}


@cache
def _counter(name: str) -> Any:
    return Metrics.counter(NAMESPACE, name)


def dead_letter(
    payload: Any, view: str | None, reason: str, detail: str, source: dict | None = None
) -> dict[str, Any]:
    """Build a dead-letter row and count it."""
    _counter(f"dead_letter/{reason}").inc()
    _counter(f"dead_letter/{view or '_input'}/{reason}").inc()
    if isinstance(payload, bytes | bytearray):
        payload = bytes(payload).decode("utf-8", errors="replace")
    return {"view": view, "reason": reason, "detail": detail, "payload": payload, "source": source}
