"""Realistic JSON Lines input for end-to-end tests, deterministic per seed.

Every line is one message from one of four domains, chosen uniformly (``kind`` names it):

========== ==========================================================================
domain     fields (besides ``kind``, ``ts`` and ``timestamp_ms``)
========== ==========================================================================
network    ``org``, ``site``, ``client_ip``, ``protocol``, ``server_port``, ``bytes``,
           ``packets``, ``rtt_ms``
engagement ``post_id``, ``event_type`` (``view`` | ``like`` | ``share``), ``user_id``,
           ``dwell_ms`` (views only)
cdn        ``host``, ``path``, ``method``, ``status``, ``country``, ``cache``, ``bytes``,
           ``latency_ms``, ``edge`` (an object: ``{"pop": site}``, read as ``edge.pop``)
ads        ``campaign``, ``ad_id``, ``event`` (``impression`` | ``click``), ``user_id``,
           ``cost`` (clicks only)
========== ==========================================================================

Event time is written twice, as ``ts`` (ISO 8601, millisecond fraction, ``Z``; a fraction
``offset_fraction`` of lines use a ``+hh:mm``/``-hh:mm`` offset instead, same instant) and as
``timestamp_ms`` (epoch milliseconds). It follows a clock moving evenly from ``start`` over
``span_s`` seconds, jittered uniformly by up to ``disorder_s`` either way, so lines are out of
order. A fraction ``iso_variant_fraction`` of lines write ``ts`` in another form of the
event-time grammar (docs/semantics.md), one of :data:`ISO_VARIANTS` drawn uniformly: a space
or lowercase ``t``/``z``, no offset, a comma, ``+hhmm``, ``-hh``, ``-00:00``, nine fraction
digits (``.123000999``: truncated, not rounded, to the same instant), six digits with an
offset, whole seconds, whole minutes (those two move both fields to the start of the second or
minute, so that they stay the same instant). Keys (orgs, sites, IPs, posts, users, hosts,
paths, campaigns, ads, countries) are Zipf-skewed: rank ``r`` has weight ``1 / r**zipf_a``.

A fraction ``dotted_fraction`` of cdn lines write ``edge`` in one of :data:`DOTTED_VARIANTS`,
the cases of the dotted-name rule for ``edge.pop``: the literal key ``"edge.pop"`` alone; both
the literal key and ``edge`` (the literal wins); a null literal key (the nested value is read);
``edge`` a string or an array (``edge.pop`` is null); ``{"pop": null}``.

A fraction ``null_fraction`` of the optional fields is null or missing (half each); the
event-time fields and ``kind`` never are. A fraction ``bad_fraction`` of lines is bad, the
kinds in :data:`BAD_KINDS` drawn uniformly:

* ``not_json`` -- a truncated object or a plain-text log line;
* ``not_object`` -- valid JSON that is an array, a string, a number, ``true`` or ``null``;
* ``missing_event_time`` -- neither ``ts`` nor ``timestamp_ms``;
* ``bad_event_time`` -- both present and invalid (impossible dates, free text, forms outside
  the event-time grammar, epoch numbers written as strings, booleans, objects);
* ``non_numeric`` -- a numeric field holding a string (``"lots"``, ``"12kb"``, ``"123"``,
  ``""``) or an object;
* ``boolean_number`` -- a numeric field holding ``true`` or ``false``.

The generator never writes JSON that only a lenient parser accepts (``NaN``, trailing commas).

Example:
    >>> info = generate(tmp_path / "in.jsonl", 300_000, seed=7)  # doctest: +SKIP
    >>> info.bad["not_json"]  # doctest: +SKIP
    512
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

DOMAINS: tuple[str, ...] = ("network", "engagement", "cdn", "ads")
BAD_KINDS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "missing_event_time",
    "bad_event_time",
    "non_numeric",
    "boolean_number",
)
DEFAULT_START = datetime(2024, 3, 1, tzinfo=UTC)
#: Other forms of ``ts`` for the same instant (see the module docstring).
ISO_VARIANTS: tuple[str, ...] = (
    "space",
    "lowercase",
    "naive",
    "comma",
    "hhmm",
    "hh",
    "minus_zero",
    "nanos",
    "micros_offset",
    "seconds",
    "minutes",
)
#: How a cdn line may write ``edge`` (see the module docstring).
DOTTED_VARIANTS: tuple[str, ...] = (
    "literal",
    "both",
    "null_literal",
    "not_object",
    "array",
    "null",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Numeric fields per domain; ``non_numeric`` and ``boolean_number`` lines spoil one of them.
NUMERIC_FIELDS: dict[str, tuple[str, ...]] = {
    "network": ("bytes", "packets", "rtt_ms", "server_port"),
    "engagement": ("dwell_ms",),
    "cdn": ("bytes", "latency_ms", "status"),
    "ads": ("cost",),
}
_TIME_FIELDS = ("ts", "timestamp_ms")
_NEVER_NULL = frozenset({"kind", *_TIME_FIELDS})
_MAX_NULLABLE = 8  # no domain has more optional fields

_ORGS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell")
_SITES = ("fra1", "ams2", "nyc3", "sfo1", "sin1", "syd2", "gru1", "lhr4")
_PROTOCOLS = ("tcp", "udp", "icmp")
_PORTS = (443, 80, 53, 22, 8080, 3478)
_EVENT_TYPES = ("view", "like", "share")
_HOSTS = (
    "www.example.com",
    "img.example.com",
    "api.example.com",
    "static.example.net",
    "video.example.org",
    "cdn.shop.example",
    "docs.example.com",
    "m.example.com",
)
_PATH_TEMPLATES = ("/assets/app-{i}.js", "/img/{i}.webp", "/api/v1/items/{i}", "/video/{i}.m3u8")
_METHODS = ("GET", "HEAD", "POST")
_STATUSES = (200, 304, 206, 404, 500, 503)
_COUNTRIES = (
    "US", "DE", "IN", "BR", "GB", "FR", "JP", "CA", "NL", "SE",
    "ES", "IT", "PL", "AU", "KR", "MX", "SG", "ZA", "CH", "NO",
)  # fmt: skip
_CACHE = ("HIT", "MISS", "EXPIRED")


@dataclass(frozen=True)
class Generated:
    """What :func:`generate` wrote: line counts by kind and the clock's range."""

    path: Path
    lines: int
    bad: dict[str, int] = field(default_factory=dict)
    by_domain: dict[str, int] = field(default_factory=dict)
    iso_variants: dict[str, int] = field(default_factory=dict)
    dotted: dict[str, int] = field(default_factory=dict)
    start: datetime = DEFAULT_START
    end: datetime = DEFAULT_START

    @property
    def good(self) -> int:
        return self.lines - sum(self.bad.values())


def zipf_indices(rng: np.random.Generator, universe: int, n: int, a: float) -> np.ndarray:
    """Draw ``n`` ranks in ``[0, universe)`` with weight ``1 / (rank + 1)**a``."""
    weights = 1.0 / np.arange(1, universe + 1, dtype=np.float64) ** a
    return rng.choice(universe, size=n, p=weights / weights.sum())


def _pick(rng: np.random.Generator, values: Sequence[Any], n: int, a: float) -> list[Any]:
    idx = zipf_indices(rng, len(values), n, a)
    return [values[i] for i in idx.tolist()]


def _weighted(
    rng: np.random.Generator, values: Sequence[Any], p: Sequence[float], n: int
) -> list[Any]:
    idx = rng.choice(len(values), size=n, p=np.asarray(p) / np.sum(p))
    return [values[i] for i in idx.tolist()]


def _iso_strings(ts_ms: np.ndarray, offset_min: np.ndarray) -> list[str]:
    """ISO 8601 with millisecond fraction; ``Z`` where the offset is 0, else ``+hh:mm``."""
    local = (ts_ms + offset_min * 60_000).astype("datetime64[ms]")
    text = np.datetime_as_string(local, unit="ms").tolist()
    out: list[str] = []
    for s, off in zip(text, offset_min.tolist(), strict=True):
        if off == 0:
            out.append(s + "Z")
        else:
            sign = "+" if off > 0 else "-"
            out.append(f"{s}{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}")
    return out


def _iso_variant(kind: str, ts_ms: int) -> tuple[str, int]:
    """``ts`` in another form of the grammar, and the instant it reads (epoch milliseconds)."""
    if kind == "seconds":
        ts_ms -= ts_ms % 1000
    elif kind == "minutes":
        ts_ms -= ts_ms % 60_000
    utc = _EPOCH + timedelta(milliseconds=ts_ms)
    date, time, ms = f"{utc:%Y-%m-%d}", f"{utc:%H:%M:%S}", f"{ts_ms % 1000:03d}"

    def local(offset: timedelta) -> str:
        return f"{utc + offset:%Y-%m-%dT%H:%M:%S}"

    text = {
        "space": f"{date} {time}.{ms}Z",
        "lowercase": f"{date}t{time}.{ms}z",
        "naive": f"{date}T{time}.{ms}",
        "comma": f"{date} {time},{ms}",
        "hhmm": f"{local(timedelta(hours=5, minutes=30))}.{ms}+0530",
        "hh": f"{local(timedelta(hours=-8))}.{ms}-08",
        "minus_zero": f"{date}T{time}.{ms}-00:00",
        "nanos": f"{date}T{time}.{ms}000999Z",
        "micros_offset": f"{local(timedelta(hours=1))}.{ms}000+01:00",
        "seconds": f"{date}T{time}Z",
        "minutes": f"{date}T{utc:%H:%M}Z",
    }[kind]
    return text, ts_ms


def _dotted(kind: str, msg: dict[str, Any]) -> None:
    """Rewrite a cdn message's ``edge`` as one case of the dotted-name rule."""
    pop = msg["edge"]["pop"]
    other = _SITES[(_SITES.index(pop) + 1) % len(_SITES)]
    if kind == "literal":
        del msg["edge"]
        msg["edge.pop"] = pop
    elif kind == "both":
        msg["edge.pop"] = pop
        msg["edge"] = {"pop": other}  # not read: the literal key wins
    elif kind == "null_literal":
        msg["edge.pop"] = None
    elif kind == "not_object":
        msg["edge"] = pop
    elif kind == "array":
        msg["edge"] = [pop]
    else:
        msg["edge"] = {"pop": None}


class _Columns:
    """Every field's values for all ``n`` lines, drawn up front with numpy."""

    def __init__(self, rng: np.random.Generator, n: int, keys: int, a: float) -> None:
        self.org = _pick(rng, _ORGS, n, a)
        self.site = _pick(rng, _SITES, n, a)
        ips = zipf_indices(rng, keys, n, a).tolist()
        self.client_ip = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in ips]
        self.protocol = _weighted(rng, _PROTOCOLS, (0.7, 0.25, 0.05), n)
        self.server_port = _pick(rng, _PORTS, n, 1.5)
        size = np.maximum(rng.lognormal(7.5, 1.6, n), 40).astype(np.int64)
        self.bytes = size.tolist()
        self.packets = np.maximum(size // 1400 + rng.integers(1, 4, n), 1).tolist()
        self.rtt_ms = np.round(rng.gamma(2.0, 12.0, n), 3).tolist()

        self.post_id = [f"p{i:06d}" for i in zipf_indices(rng, keys, n, a).tolist()]
        self.event_type = _weighted(rng, _EVENT_TYPES, (0.8, 0.15, 0.05), n)
        self.user_id = [f"u{i:07d}" for i in zipf_indices(rng, keys * 10, n, 0.9).tolist()]
        self.dwell_ms = np.round(rng.exponential(8000.0, n)).astype(np.int64).tolist()

        self.host = _pick(rng, _HOSTS, n, a)
        paths = zipf_indices(rng, keys, n, a).tolist()
        self.path = [_PATH_TEMPLATES[i % 4].format(i=i) for i in paths]
        self.method = _weighted(rng, _METHODS, (0.9, 0.06, 0.04), n)
        self.status = _weighted(rng, _STATUSES, (0.84, 0.06, 0.03, 0.04, 0.02, 0.01), n)
        self.country = _pick(rng, _COUNTRIES, n, a)
        self.cache = _weighted(rng, _CACHE, (0.8, 0.15, 0.05), n)
        self.latency_ms = np.round(rng.lognormal(3.0, 0.9, n), 2).tolist()

        self.campaign = [f"cmp-{i:03d}" for i in zipf_indices(rng, 40, n, a).tolist()]
        self.ad_id = [f"ad-{i:05d}" for i in zipf_indices(rng, keys, n, a).tolist()]
        self.ad_event = _weighted(rng, ("impression", "click"), (0.97, 0.03), n)
        self.cost = np.round(rng.gamma(2.0, 0.35, n), 4).tolist()
        self.pop = _pick(rng, _SITES, n, a)


def _message(c: _Columns, domain: str, i: int) -> dict[str, Any]:
    if domain == "network":
        return {
            "org": c.org[i],
            "site": c.site[i],
            "client_ip": c.client_ip[i],
            "protocol": c.protocol[i],
            "server_port": c.server_port[i],
            "bytes": c.bytes[i],
            "packets": c.packets[i],
            "rtt_ms": c.rtt_ms[i],
        }
    if domain == "engagement":
        msg: dict[str, Any] = {
            "post_id": c.post_id[i],
            "event_type": c.event_type[i],
            "user_id": c.user_id[i],
        }
        if c.event_type[i] == "view":
            msg["dwell_ms"] = c.dwell_ms[i]
        return msg
    if domain == "cdn":
        return {
            "host": c.host[i],
            "path": c.path[i],
            "method": c.method[i],
            "status": c.status[i],
            "country": c.country[i],
            "cache": c.cache[i],
            "bytes": c.bytes[i],
            "latency_ms": c.latency_ms[i],
            "edge": {"pop": c.pop[i]},
        }
    msg = {"campaign": c.campaign[i], "ad_id": c.ad_id[i], "event": c.ad_event[i]}
    msg["user_id"] = c.user_id[i]
    if c.ad_event[i] == "click":
        msg["cost"] = c.cost[i]
    return msg


def _blank(msg: dict[str, Any], null: list[bool], missing: list[bool]) -> None:
    """Null or drop the optional fields flagged in ``null`` (``missing`` picks which)."""
    optional = [k for k in msg if k not in _NEVER_NULL]
    for j, name in enumerate(optional[:_MAX_NULLABLE]):
        if null[j]:
            if missing[j]:
                del msg[name]
            else:
                msg[name] = None


_NOT_OBJECT = (b"[1, 2, 3]", b'"just a string"', b"42", b"true", b"null", b"[]")
_BAD_TS = (
    "yesterday",
    "2024-13-45T25:61:00Z",
    "2024-02-30T10:00:00Z",
    "",
    "12/03/2024 10:00",
    "2024-03-01",  # a date alone
    "2024-03-01T24:00:00Z",  # hour 24
    "2016-12-31T23:59:60Z",  # a leap second
    "20240301T100000Z",  # basic format
    "2024-03-01T10:00:00+02:00:00",  # offset seconds
    "2024-03-01T10:00:00.Z",  # a point without digits
)
_BAD_TS_MS: tuple[Any, ...] = ("soon", "1709251200000", True, {"ms": 1}, [1709251200000])
_BAD_NUMBER: tuple[Any, ...] = ("lots", "12kb", "123", "", {"value": 3})


def _spoil(kind: str, msg: dict[str, Any], domain: str, r: int) -> bytes:
    """Turn a good message into a bad line of ``kind``; ``r`` picks the variant."""
    if kind == "not_json":
        if r % 2 == 0:
            text = orjson.dumps(msg)
            return text[: max(1, len(text) // 2)]
        return f"{msg['ts']} WARN upstream timeout after 3 retries".encode()
    if kind == "not_object":
        return _NOT_OBJECT[r % len(_NOT_OBJECT)]
    if kind == "missing_event_time":
        for name in _TIME_FIELDS:
            msg.pop(name, None)
    elif kind == "bad_event_time":
        msg["ts"] = _BAD_TS[r % len(_BAD_TS)]
        msg["timestamp_ms"] = _BAD_TS_MS[r % len(_BAD_TS_MS)]
    else:
        fields = NUMERIC_FIELDS[domain]
        name = fields[(r // 7) % len(fields)]  # independent of the variant below
        if kind == "non_numeric":
            msg[name] = _BAD_NUMBER[r % len(_BAD_NUMBER)]
        else:
            msg[name] = r % 2 == 0
    return orjson.dumps(msg)


def generate(
    path: str | Path,
    n: int,
    *,
    seed: int,
    keys: int = 1000,
    bad_fraction: float = 0.01,
    null_fraction: float = 0.02,
    disorder_s: float = 30.0,
    start: datetime = DEFAULT_START,
    span_s: float = 3600.0,
    zipf_a: float = 1.2,
    offset_fraction: float = 0.02,
    iso_variant_fraction: float = 0.02,
    dotted_fraction: float = 0.05,
    domains: Sequence[str] = DOMAINS,
) -> Generated:
    """Write ``n`` JSON Lines messages to ``path`` and say what was written.

    Args:
        path: The file to (over)write.
        n: Number of lines.
        seed: Same seed, same arguments -> byte-identical file.
        keys: Size of the high-cardinality key universes (IPs, posts, paths, ads; users
            have ``10 * keys``).
        bad_fraction: Share of bad lines, spread evenly over :data:`BAD_KINDS`.
        null_fraction: Share of optional fields that are null or missing.
        disorder_s: Event times are the clock +- up to this many seconds.
        start: The clock's start (UTC-aware).
        span_s: The clock runs from ``start`` to ``start + span_s``.
        zipf_a: Skew of the keys.
        offset_fraction: Share of ``ts`` values written with a non-zero UTC offset.
        iso_variant_fraction: Share of ``ts`` values written in one of :data:`ISO_VARIANTS`.
        dotted_fraction: Share of cdn lines with ``edge`` in one of :data:`DOTTED_VARIANTS`.
        domains: Which domains to draw messages from.
    """
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown or not domains:
        raise ValueError(f"unknown domains {unknown}; known: {', '.join(DOMAINS)}")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    rng = np.random.default_rng(seed)
    cols = _Columns(rng, n, keys, zipf_a)
    domain_of = _weighted(rng, list(domains), [1.0] * len(domains), n)

    start_ms = int(start.timestamp() * 1000)
    clock = start_ms + np.arange(n, dtype=np.float64) * (span_s * 1000.0 / max(n, 1))
    jitter = rng.uniform(-disorder_s * 1000.0, disorder_s * 1000.0, n)
    ts_ms = np.round(clock + jitter).astype(np.int64)
    offsets = np.where(
        rng.random(n) < offset_fraction, rng.choice([-480, -300, 60, 120, 330, 540], n), 0
    )
    ts_text = _iso_strings(ts_ms, offsets)
    ts_list = ts_ms.tolist()

    bad_mask = (rng.random(n) < bad_fraction).tolist()
    bad_kind = rng.integers(0, len(BAD_KINDS), n).tolist()
    variant = rng.integers(0, 1_000_000, n).tolist()
    null_draw = rng.random((n, _MAX_NULLABLE)) < null_fraction
    missing_draw = rng.random((n, _MAX_NULLABLE)) < 0.5
    null_rows = np.flatnonzero(null_draw.any(axis=1))
    nulls = dict(
        zip(
            null_rows.tolist(),
            zip(null_draw[null_rows].tolist(), missing_draw[null_rows].tolist(), strict=True),
            strict=True,
        )
    )
    iso_variant = np.where(
        rng.random(n) < iso_variant_fraction, rng.integers(0, len(ISO_VARIANTS), n), -1
    ).tolist()
    dotted = np.where(
        rng.random(n) < dotted_fraction, rng.integers(0, len(DOTTED_VARIANTS), n), -1
    ).tolist()

    bad: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    dotted_written: Counter[str] = Counter()
    out = Path(path)
    # Streamed line by line: building all lines in memory first is several times slower.
    with out.open("wb", buffering=1 << 20) as f:
        write = f.write
        for i in range(n):
            domain = domain_of[i]
            if iso_variant[i] < 0:
                msg = {"kind": domain, "ts": ts_text[i], "timestamp_ms": ts_list[i]}
            else:
                form = ISO_VARIANTS[iso_variant[i]]
                variants[form] += 1
                text, instant_ms = _iso_variant(form, ts_list[i])
                msg = {"kind": domain, "ts": text, "timestamp_ms": instant_ms}
            msg.update(_message(cols, domain, i))
            if i in nulls:
                _blank(msg, *nulls[i])
            if domain == "cdn" and dotted[i] >= 0:
                dotted_written[DOTTED_VARIANTS[dotted[i]]] += 1
                _dotted(DOTTED_VARIANTS[dotted[i]], msg)
            if bad_mask[i]:
                kind = BAD_KINDS[bad_kind[i]]
                bad[kind] += 1
                write(_spoil(kind, msg, domain, variant[i]) + b"\n")
            else:
                write(orjson.dumps(msg, option=orjson.OPT_APPEND_NEWLINE))
    return Generated(
        path=out,
        lines=n,
        bad={k: bad.get(k, 0) for k in BAD_KINDS},
        by_domain=dict(Counter(domain_of)),
        iso_variants=dict(variants),
        dotted=dict(dotted_written),
        start=start,
        end=datetime.fromtimestamp(start.timestamp() + span_s, tz=UTC),
    )
