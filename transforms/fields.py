"""Field access into decoded messages: a top-level key, else a dotted path into nested objects."""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any


def getter(name: str) -> Callable[[dict], Any]:
    """Return ``msg -> value or None``.

    ``"client.ip"`` reads the key ``"client.ip"`` when the message has it and it is not null,
    else ``msg["client"]["ip"]`` through objects only: real telemetry is nested, and a literal
    dotted key still wins. A null literal key is missing, as null is everywhere
    (docs/semantics.md, "Messages").
    """
    if "." not in name:
        return lambda msg: msg.get(name)
    parts = name.split(".")

    def get(msg: dict) -> Any:
        value = msg.get(name)
        if value is not None:
            return value
        value = msg
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


def values_of(msgs: list[dict], name: str, get: Callable[[dict], Any]) -> list[Any]:
    """``get`` (from :func:`getter`) over every message; a top-level name skips its calls."""
    if "." in name:
        return [get(m) for m in msgs]
    return list(map(dict.get, msgs, repeat(name)))
