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
     "accumulator_crc32": 2914160342, "offsets": {"events/3": [1200, 1899]}}

The Kafka message key is the view, the final (rolled-up) window and grouping key, so the
default partitioner spreads keys and windows over the partitions and all partials of one
final row land on one partition.

Level 2 reads envelopes as untrusted input: :func:`decode` raises nothing but
:class:`~liveagg.transforms.plan.Reject`, for any bytes, and a partial it returns merges and
formats without error. Each field is checked against the view, and the accumulator is checked
by the aggregations (:meth:`~liveagg.transforms.combine.ViewCombineFn.decode_checked`) before
any of it reaches DataSketches' native deserializers.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from liveagg.combiners._common import brief, is_scalar, normalize_number
from liveagg.engine.compiled import CompiledView, as_compiled
from liveagg.engine.partials import Variant
from liveagg.engine.windows import GLOBAL
from liveagg.spec import ViewSpec
from liveagg.transforms.eventtime import MAX_US, MIN_US, rfc3339
from liveagg.transforms.plan import Reject, ViewPlan, encode_key

KIND = "liveagg.partial"
VERSION = 1

#: ``(view, variant, start_us, end_us, key, shard, pane, accumulator, offsets)``; plain tuples
#: so that Beam encodes them without pickling.
Partial = tuple[str, int, int, int, bytes, str, int, bytes, dict[str, list[int]]]


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
        "accumulator_crc32": zlib.crc32(acc),
        "offsets": offsets,
    }


class _PerView:
    """Reads envelopes of the run's views with a :class:`Level2` of each, built where it is
    first used (a worker): plans are not pickled."""

    def __init__(self, views: Sequence[CompiledView | ViewSpec]) -> None:
        self._compiled = {view.name: as_compiled(view) for view in views}

    def levels(self) -> dict[str, Level2]:
        if not hasattr(self, "_levels"):
            self._levels = {name: Level2(view) for name, view in self._compiled.items()}
        return self._levels

    def __getstate__(self) -> dict[str, Any]:
        return {"_compiled": self._compiled}


class EnvelopeKey(_PerView):
    """The Kafka key of an envelope: view, final window start and final grouping key."""

    def __call__(self, env: Mapping[str, Any]) -> bytes:
        level2 = self.levels()[env["view"]]
        variant = level2.level1.variants[0]  # only views of one variant roll up
        _, start, _, group = level2.map(variant, env["window_start_us"], 0, env["key"])
        return b"%s|%d|%s" % (env["view"].encode(), start, group)


def envelope_time(payload: bytes) -> int | None:
    """An envelope's event time for the level-2 watermark: its window's start.

    The start, not the end: the watermark then passes a window only once every partition
    has moved on to partials of a later window, so level 2 fires a window when level 1 has
    delivered it (stragglers within allowed lateness are LATE panes).

    None for a message that is plainly no envelope level 2 merges (not one, another version,
    a window outside the years 1 to 9999), so that it never moves the watermark: one
    ``window_start_us`` of ``2**62`` would otherwise make every later partial too late.
    """
    env = _timed_envelope(payload)
    return None if env is None else env["window_start_us"]


def _timed_envelope(payload: bytes) -> dict[str, Any] | None:
    """The envelope :func:`envelope_time` gives a time to, or None."""
    try:
        env = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if type(env) is not dict or env.get("envelope") != KIND or not _is_version(env):
        return None
    start, end = env.get("window_start_us"), env.get("window_end_us")
    if type(start) is int and type(end) is int and MIN_US <= start < end <= MAX_US:
        return env
    return None


class EnvelopeTime(_PerView):
    """The level-2 watermark's ``timestamp_fn``: :func:`envelope_time` of the envelopes that
    level 2 would merge, None for the others.

    An envelope of another view or definition, or whose window or key is not one of the
    view's, becomes a dead letter; given a time, it still moved the watermark, so one such
    message with a far window closed every open window and made the partials after it LATE.
    Its accumulator is checked only when the envelope is merged.
    """

    def __call__(self, payload: bytes) -> int | None:
        env = _timed_envelope(payload)
        if env is None:
            return None
        name = env.get("view")
        level2 = self.levels().get(name) if type(name) is str else None
        if level2 is None or not level2.mergeable(env):
            return None
        return env["window_start_us"]


def _is_version(env: dict[str, Any]) -> bool:
    version = env.get("version")
    return type(version) is int and version == VERSION


class Level2:
    """Reads envelopes of one view and maps them onto the rows the view writes.

    ``view`` is the view as declared (what level 1 aggregated); ``final`` is its
    :meth:`ViewSpec.final` compiled, where level 2 merges (the same view unless it rolls up;
    compiled here when not given).
    """

    def __init__(self, view: CompiledView | ViewSpec, final: CompiledView | None = None) -> None:
        declared = as_compiled(view)
        self.spec = spec = declared.spec
        self.fingerprint = declared.fingerprint
        self.level1 = ViewPlan(declared)
        self.final = ViewPlan(final if final is not None else as_compiled(spec.final()))
        self._variants = {(v.granularity, v.grouping_set): v for v in self.level1.variants}
        rollup = spec.rollup
        self._keep = (
            None
            if rollup is None
            else tuple(spec.grouping_cols.index(c) for c in rollup.grouping_cols)
        )
        # The roll-up's windows: the final view's one fixed granularity.
        self._rollup = None if rollup is None else self.final.variants[0].window

    def mergeable(self, env: dict[str, Any]) -> bool:
        """Whether :meth:`check` takes ``env`` as far as its definition, window, key and
        coordinates go (its accumulator is not read)."""
        try:
            self._variant(env)
        except Reject:
            return False
        return True

    def check(self, env: dict[str, Any]) -> Partial:
        """The final-level partial of a level-1 envelope, or :class:`Reject`."""
        variant = self._variant(env)
        start, end, key = env.get("window_start_us"), env.get("window_end_us"), env.get("key")
        shard, pane, offsets = env.get("shard"), env.get("pane"), env.get("offsets")
        acc = self._accumulator(env)
        if self._keep is not None:
            # Rolled up, many level-1 keys and windows share a final one: each is its own
            # stream of panes, to merge with the others, never to replace them.
            shard = f"{shard}|{start}|{orjson.dumps(key).decode()}"
        variant, start, end, group = self.map(variant, start, end, key)
        return (self.spec.name, variant.index, start, end, group, shard, pane, acc, offsets)

    def _variant(self, env: dict[str, Any]) -> Variant:
        """The level-1 variant of an envelope whose definition, window, key and coordinates
        are the view's, or :class:`Reject`."""
        spec = self.spec
        definition = env.get("definition")
        if definition != self.fingerprint:
            raise Reject(
                "incompatible_envelope",
                f"envelope of view {spec.name!r} has definition {brief(definition)}, "
                f"but the view in {spec.origin} is {self.fingerprint!r}: it was aggregated "
                "by another definition of the view, and is not merged",
            )
        granularity, grouping_set = env.get("granularity"), env.get("grouping_set")
        variant = None
        if type(granularity) in (str, type(None)) and type(grouping_set) in (int, type(None)):
            variant = self._variants.get((granularity, grouping_set))
        if variant is None:
            raise Reject(
                "incompatible_envelope",
                f"view {spec.name!r} has no granularity {brief(granularity)} and "
                f"grouping set {brief(grouping_set)}",
            )
        start, end, key = env.get("window_start_us"), env.get("window_end_us"), env.get("key")
        shard, pane, offsets = env.get("shard"), env.get("pane"), env.get("offsets")
        problem = (
            self._window_problem(variant, start, end)
            or self._key_problem(variant, key)
            or _coordinates_problem(shard, pane, offsets)
        )
        if problem:
            raise Reject("bad_envelope", f"envelope of view {spec.name!r}: {problem}")
        return variant

    def _window_problem(self, variant: Variant, start: Any, end: Any) -> str | None:
        if type(start) is not int or type(end) is not int:
            return f"window_start_us and window_end_us must be integers, got {_window(start, end)}"
        # Rows and dead letters print their window: it must be a date datetime can show
        # (the global window's bounds are never printed).
        if (start, end) != GLOBAL and not MIN_US <= start < end <= MAX_US:
            return f"window {_window(start, end)} is outside the years 1 to 9999"
        if (start, end) not in variant.assign(start):
            return f"window {_window(start, end)} is not a window of the view"
        if self._rollup is not None:
            [(final, final_end)] = self._rollup.assign(start)
            if final < MIN_US or final_end > MAX_US:
                return f"rolled-up window of {_window(start, end)} is outside the years 1 to 9999"
        return None

    def _key_problem(self, variant: Variant, key: Any) -> str | None:
        names = [self.spec.grouping_cols[i] for i in variant.positions]
        if type(key) is not list or len(key) != len(names):
            return f"key must list the {len(names)} values of {names}, got {brief(key)}"
        for name, value in zip(names, key, strict=True):
            # What level 1 keys by: a JSON scalar or null in its normal form (integral floats
            # in the 64-bit ranges made ints; 1e308 stays a float).
            if not (value is None or is_scalar(value)) or (
                type(value) is float and normalize_number(value) is not value
            ):
                return f"key value {name}={brief(value)} is not a grouping value level 1 writes"
        return None

    def _accumulator(self, env: dict[str, Any]) -> bytes:
        """The accumulator's bytes, checked (checksum, then each aggregation's format)."""
        name = self.spec.name
        text = env.get("accumulator")
        try:
            if type(text) is not str:
                raise ValueError(f"expected base64 text, got {brief(text)}")
            acc = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error) as e:
            raise Reject(
                "bad_envelope", f"envelope of view {name!r}: unreadable accumulator: {e}"
            ) from None
        crc = env.get("accumulator_crc32")
        if crc is not None and (type(crc) is not int or crc != zlib.crc32(acc)):
            raise Reject(
                "bad_envelope",
                f"envelope of view {name!r}: accumulator_crc32 {brief(crc)} does not match "
                f"its accumulator ({zlib.crc32(acc)}): the bytes were altered after level 1 "
                "wrote them",
            )
        try:
            self.level1.combine.decode_checked(acc)
        except ValueError as e:
            raise Reject(
                "bad_envelope", f"envelope of view {name!r}: unreadable accumulator: {e}"
            ) from None
        return acc

    def map(
        self, variant: Variant, start: int, end: int, key: list[Any]
    ) -> tuple[Variant, int, int, bytes]:
        """A level-1 (variant, window, key) as the final view's."""
        if self._keep is None or self._rollup is None:
            return variant, start, end, encode_key(tuple(key))
        [(start, end)] = self._rollup.assign(start)
        group = encode_key(tuple(key[i] for i in self._keep))
        return self.final.variants[0], start, end, group


_MAX_PANE = 2**63 - 1  # level 1 numbers a shard's panes from 0: an int64 is plenty


def _coordinates_problem(shard: Any, pane: Any, offsets: Any) -> str | None:
    """What is wrong with an envelope's shard, pane and offsets, if anything."""
    if type(shard) is not str:
        return f"shard must be a string, got {brief(shard)}"
    if type(pane) is not int or not 0 <= pane <= _MAX_PANE:
        return f"pane must be an integer from 0 to 2**63 - 1, got {brief(pane)}"
    if type(offsets) is not dict or not all(
        type(span) is list
        and len(span) == 2
        and type(span[0]) is int
        and type(span[1]) is int
        and 0 <= span[0] <= span[1]
        for span in offsets.values()
    ):
        return f'offsets must map "topic/partition" to [first, last] offsets, got {brief(offsets)}'
    return None


def _time(value: Any) -> str:
    """A window bound for a message: RFC 3339 when it is one, never raising."""
    if type(value) is int and MIN_US <= value <= MAX_US:
        return rfc3339(value)
    return brief(value)


def _window(start: Any, end: Any) -> str:
    return f"[{_time(start)}, {_time(end)})"


def decode(payload: bytes, views: Mapping[str, Level2]) -> tuple[str, Partial]:
    """Read one envelope: ``(view name, final-level partial)``.

    Raises :class:`Reject` and nothing else, whatever ``payload`` holds: an error this module
    did not foresee (a custom decoder's, say) is a ``bad_envelope`` naming it, not a failed
    bundle. The Reject's ``view`` is the envelope's view once it is known.
    """
    view = None
    try:
        env = _envelope_of(payload)
        name = env.get("view")
        level2 = views.get(name) if type(name) is str else None
        if level2 is None:
            raise Reject(
                "incompatible_envelope",
                f"envelope of view {brief(name)}, which --views does not define "
                f"(defined: {', '.join(sorted(views)) or 'none'})",
            )
        view = name
        return name, level2.check(env)
    except Reject as r:
        r.view = view  # type: ignore[attr-defined]
        raise
    except Exception as e:  # a defect shown as a dead letter, never a crashed worker
        r = _unforeseen(e)
        r.view = view  # type: ignore[attr-defined]
        raise r from None


def _envelope_of(payload: bytes) -> dict[str, Any]:
    """The envelope a message holds, or :class:`Reject` if it holds none this liveagg reads."""
    try:
        env = orjson.loads(payload)
    except orjson.JSONDecodeError:  # also for a payload that is not bytes or str
        raise Reject("not_envelope", "the message is not JSON") from None
    if type(env) is not dict or env.get("envelope") != KIND:
        raise Reject(
            "not_envelope",
            f'expected a level-1 envelope (an object with "envelope": "{KIND}"); is '
            "--intermediate-topic the topic level 1 writes to?",
        )
    if not _is_version(env):
        raise Reject(
            "incompatible_envelope",
            f"envelope version {brief(env.get('version'))}; this liveagg reads version {VERSION}",
        )
    return env


def _unforeseen(error: Exception) -> Reject:
    try:
        text = str(error)
    except Exception:  # an exception from a custom decoder may not even print
        text = "(its message cannot be shown)"
    text = text if len(text) <= 200 else text[:197] + "..."
    return Reject("bad_envelope", f"the envelope could not be read: {type(error).__name__}: {text}")
