"""One table of field reads for the pipeline's getter and the oracle's SQL alike.

Each case is ``(message, field, value, rule)``: ``value`` is what the field reads in the
message, None for null or missing. The rule is that of docs/semantics.md, "Messages": a dotted
name is the literal key while that is present and not null, else the path through nested
objects.
"""

from __future__ import annotations

from typing import Any

FIELD_CASES: list[tuple[dict[str, Any], str, Any, str]] = [
    ({"ip": "a"}, "ip", "a", "a plain name"),
    ({"client.ip": "a"}, "client.ip", "a", "the literal key"),
    ({"client": {"ip": "b"}}, "client.ip", "b", "the nested path"),
    ({"client.ip": "a", "client": {"ip": "b"}}, "client.ip", "a", "the literal key wins"),
    ({"client.ip": None, "client": {"ip": "b"}}, "client.ip", "b", "a null literal is missing"),
    ({"client.ip": 0, "client": {"ip": "b"}}, "client.ip", 0, "a falsy literal still wins"),
    ({"client": {"ip": None}}, "client.ip", None, "a null at the end of the path"),
    ({"client": {}}, "client.ip", None, "a missing key at the end"),
    ({"client": "b"}, "client.ip", None, "a string on the way"),
    ({"client": ["b"]}, "client.0", None, "an array on the way is not indexed"),
    ({"client": {"0": "x"}}, "client.0", "x", "a key that looks like an index"),
    ({"a": {"b": {"c": 1}}}, "a.b.c", 1, "three levels"),
    ({"a.b": {"c": 1}}, "a.b.c", None, "only the whole name or the whole path"),
    ({"a": {"b.c": 1}}, "a.b.c", None, "only the whole name or the whole path, inside"),
    ({"client": {"ip": {"v": 4}}}, "client.ip", {"v": 4}, "an object at the end"),
    ({"a": {"": 1}}, "a.", 1, "an empty last part is the key ''"),
    ({"a/b": 1, "a~b": 2}, "a/b", 1, "a slash in a name"),
    ({"a/b": 1, "a~b": 2}, "a~b", 2, "a tilde in a name"),
    ({}, "client.ip", None, "nothing"),
]
