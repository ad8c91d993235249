"""Partial aggregates between the two levels of a two-level run, and their Kafka envelope.

Level 1 aggregates whatever a worker holds (a bundle of a file, a Kafka partition's keys)
and emits :data:`Partial` tuples: one view's accumulator for one (variant, window, grouping
key), as aggregated by one *shard*. Level 2 merges the partials of a key and window into the
row a one-level run writes. Each shard's partials are accumulating, like panes: a later pane
of a shard replaces its earlier one, and partials of different shards are merged. So a
partial that is delivered twice (a retried bundle, a replay after a restore) is merged once.

Between pipelines a partial travels as a JSON *envelope* (``docs/two-level.md``)::

    {"envelope": "liveagg.partial", "version": 1, "view": "org_traffic",
     "definition": "<ViewSpec.fingerprint()>", "granularity": null, "grouping_set": null,
     "window_start_us": ..., "window_end_us": ..., "key": ["acme"], "shard": "events/3",
     "pane": 2, "accumulator": "<base64 of ViewCombineFn.encode>",
     "offsets": {"events/3": [1200, 1899]}}

The Kafka message key is the view, the final (rolled-up) window and grouping key, so the
default partitioner spreads keys and windows over the partitions and all partials of one
final row land on one partition.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from liveagg.spec import ViewSpec
from liveagg.transforms.eventtime import rfc3339
from liveagg.transforms.plan import Reject, Variant, ViewPlan, encode_key

KIND = "liveagg.partial"
VERSION = 1

#: ``(view, variant, start_us, end_us, key, shard, pane, accumulator, offsets)``; plain tuples
#: so that Beam encodes them without pickling.
Partial = tuple[str, int, int, int, bytes, str, int, bytes, dict[str, list[int]]]


def check_sharded(spec: ViewSpec, level1: bool) -> None:
    """Fail at construction when a view cannot be aggregated in shards."""
    ViewPlan(spec)  # fail at construction time, not on a worker
    if (level1 or spec.hot_key_fanout) and spec.window.type == "session":
        why = "level 1 of a two-level run" if level1 else "hot_key_fanout"
        raise ValueError(
            f"view {spec.name!r}: session windows cannot be aggregated in shards ({why}): a "
            "shard's session changes shape as it merges; use fixed or sliding windows"
        )


def envelope(plan: ViewPlan, definition: str, partial: Partial) -> dict[str, Any]:
    """The JSON envelope of a level-1 partial of ``plan`` (the view as declared).

    ``definition`` is the view's :meth:`~liveagg.spec.ViewSpec.fingerprint`, computed once
    by the caller rather than per partial.
    """
    view, variant_index, start, end, key, shard, pane, acc, offsets = partial
    variant = plan.variants[variant_index]
    return {
        "envelope": KIND,
        "version": VERSION,
        "view": view,
        "definition": definition,
        "granularity": variant.granularity,
        "grouping_set": variant.grouping_set,
        "window_start_us": start,
        "window_end_us": end,
        "key": orjson.loads(key),
        "shard": shard,
        "pane": pane,
        "accumulator": base64.b64encode(acc).decode("ascii"),
        "offsets": offsets,
    }


class EnvelopeKey:
    """The Kafka key of an envelope: view, final window start and final grouping key."""

    def __init__(self, specs: list[ViewSpec]) -> None:
        self._specs = {s.name: s for s in specs}

    def __call__(self, env: Mapping[str, Any]) -> bytes:
        if not hasattr(self, "_views"):  # built on the worker: plans are not pickled
            self._views = {name: Level2(spec) for name, spec in self._specs.items()}
        level2 = self._views[env["view"]]
        variant = level2.level1.variants[0]  # only views of one variant roll up
        _, start, _, group = level2.map(variant, env["window_start_us"], 0, env["key"])
        return b"%s|%d|%s" % (env["view"].encode(), start, group)

    def __getstate__(self) -> dict[str, Any]:
        return {"_specs": self._specs}


def envelope_time(payload: bytes) -> int | None:
    """An envelope's event time for the level-2 watermark: its window's start.

    The start, not the end: the watermark then passes a window only once every partition
    has moved on to partials of a later window, so level 2 fires a window when level 1 has
    delivered it (stragglers within allowed lateness are LATE panes).
    """
    try:
        start = orjson.loads(payload).get("window_start_us")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return start if type(start) is int else None


class Level2:
    """Reads envelopes of one view and maps them onto the rows the view writes.

    ``spec`` is the view as declared (what level 1 aggregated); ``final`` is
    :meth:`ViewSpec.final`, where level 2 merges (the same view unless it rolls up).
    """

    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self.fingerprint = spec.fingerprint()
        self.level1 = ViewPlan(spec)
        self.final = ViewPlan(spec.final())
        self._variants = {(v.granularity, v.grouping_set): v for v in self.level1.variants}
        rollup = spec.rollup
        self._keep = (
            None
            if rollup is None
            else tuple(spec.grouping_cols.index(c) for c in rollup.grouping_cols)
        )
        self._size = None if rollup is None else rollup.size.micros

    def check(self, env: dict[str, Any]) -> Partial:
        """The final-level partial of a level-1 envelope, or :class:`Reject`."""
        spec = self.spec
        if env.get("definition") != self.fingerprint:
            raise Reject(
                "incompatible_envelope",
                f"envelope of view {spec.name!r} has definition {env.get('definition')!r}, "
                f"but the view in {spec.origin} is {self.fingerprint!r}: it was aggregated "
                "by another definition of the view, and is not merged",
            )
        variant = self._variants.get((env.get("granularity"), env.get("grouping_set")))
        if variant is None:
            raise Reject(
                "incompatible_envelope",
                f"view {spec.name!r} has no granularity {env.get('granularity')!r} and "
                f"grouping set {env.get('grouping_set')!r}",
            )
        start, end, key = env.get("window_start_us"), env.get("window_end_us"), env.get("key")
        shard, pane, offsets = env.get("shard"), env.get("pane"), env.get("offsets")
        if not (
            type(start) is int
            and type(end) is int
            and (start, end) in variant.assign(start)
            and type(key) is list
            and len(key) == len(variant.positions)
            and type(shard) is str
            and type(pane) is int
            and isinstance(offsets, dict)
        ):
            raise Reject(
                "bad_envelope",
                f"envelope of view {spec.name!r}: window, key, shard, pane or offsets do not "
                f"fit the view (window [{_time(start)}, {_time(end)}), key {key!r})",
            )
        try:
            acc = base64.b64decode(env.get("accumulator", ""), validate=True)
            self.level1.combine.decode(acc)
        except Exception as e:  # binascii.Error, or whatever a custom decoder raises
            raise Reject(
                "bad_envelope", f"envelope of view {spec.name!r}: unreadable accumulator: {e}"
            ) from None
        if self._keep is not None:
            # Rolled up, many level-1 keys and windows share a final one: each is its own
            # stream of panes, to merge with the others, never to replace them.
            shard = f"{shard}|{start}|{orjson.dumps(key).decode()}"
        variant, start, end, group = self.map(variant, start, end, key)
        return (spec.name, variant.index, start, end, group, shard, pane, acc, offsets)

    def map(
        self, variant: Variant, start: int, end: int, key: list[Any]
    ) -> tuple[Variant, int, int, bytes]:
        """A level-1 (variant, window, key) as the final view's."""
        if self._keep is None or self._size is None:
            return variant, start, end, encode_key(tuple(key))
        start -= start % self._size
        group = encode_key(tuple(key[i] for i in self._keep))
        return self.final.variants[0], start, start + self._size, group


def _time(value: Any) -> str:
    return rfc3339(value) if type(value) is int else repr(value)


def decode(payload: bytes, views: Mapping[str, Level2]) -> tuple[str, Partial]:
    """Read one envelope: ``(view name, final-level partial)``; raises :class:`Reject`."""
    try:
        env = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Reject("not_envelope", "the message is not JSON") from None
    if type(env) is not dict or env.get("envelope") != KIND:
        raise Reject(
            "not_envelope",
            f'expected a level-1 envelope (an object with "envelope": "{KIND}"); is '
            "--intermediate-topic the topic level 1 writes to?",
        )
    if env.get("version") != VERSION:
        raise Reject(
            "incompatible_envelope",
            f"envelope version {env.get('version')!r}; this liveagg reads version {VERSION}",
        )
    name = env.get("view")
    level2 = views.get(name) if type(name) is str else None
    if level2 is None:
        raise Reject(
            "incompatible_envelope",
            f"envelope of view {name!r}, which --views does not define "
            f"(defined: {', '.join(sorted(views)) or 'none'})",
        )
    try:
        return name, level2.check(env)
    except Reject as r:
        r.view = name  # type: ignore[attr-defined]
        raise
