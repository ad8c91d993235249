"""JSON Lines decoders for the engine's fast path, compared on speed and on strictness.

    python -m benchmarks.decoders --events 1000000 --batches 2500,20000,100000

Speed: CPU seconds to turn batches of lines of the benchmark events into columns of the
fields the views read (Arrow's JSON reader against an explicit schema, as ``engine/columns.py``
calls it; Polars' NDJSON reader against the same schema, converted to Arrow; orjson line by
line, to dicts only). Polars is no dependency of liveagg: ``pip install polars`` to include it.

Strictness: what each reader makes of lines that are not plain JSON of the expected types. A
reader feeds the fast path only if every line it reads is one the exact path (orjson) reads to
the same values; the rest must fail the batch (it is split and read exactly) or be screened
out before it (``engine.columns.misread``).
"""

from __future__ import annotations

import argparse
import io
import resource
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pj

from benchmarks import generate
from benchmarks.harness import ROOT

#: The benchmark events' fields and the types the fast path learns for them.
FIELDS: dict[str, pa.DataType] = {
    "ts": pa.string(),
    "org": pa.string(),
    "site": pa.string(),
    "country": pa.string(),
    "user": pa.string(),
    "url": pa.string(),
    "status": pa.int64(),
    "bytes": pa.int64(),
    "latency_ms": pa.float64(),
}

#: (case, a line of fields a: int, s: string, f: double); the exact path's verdict is orjson's.
HOSTILE: list[tuple[str, bytes]] = [
    ("a string where an int was", b'{"a":"7","s":"x","f":1.0}'),
    ("an int where a string was", b'{"a":1,"s":5,"f":1.0}'),
    ("an object where a string was", b'{"a":1,"s":{"k":1},"f":1.0}'),
    ("a duplicate key", b'{"a":1,"a":2,"s":"x","f":1.0}'),
    ("two objects on a line", b'{"a":1,"s":"x","f":1.0}{"a":2}'),
    ("NaN", b'{"a":1,"s":"x","f":NaN}'),
    ("Infinity in a field no view reads", b'{"a":1,"s":"x","f":1.0,"g":Infinity}'),
    ("invalid UTF-8 in a string", b'{"a":1,"s":"\xc3(","f":1.0}'),
    ("an escaped lone surrogate", b'{"a":1,"s":"\\ud800","f":1.0}'),
    ("nesting 1,100 deep", b'{"a":1,"s":"x","f":1.0,"g":' + b"[" * 1100 + b"]" * 1100 + b"}"),
    ("a trailing comma", b'{"a":1,"s":"x","f":1.0,}'),
]
_SMALL = pa.schema([("a", pa.int64()), ("s", pa.string()), ("f", pa.float64())])


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arrow(lines: list[bytes], schema: pa.Schema) -> Any:
    return pj.read_json(
        io.BytesIO(b"\n".join(lines)),
        read_options=pj.ReadOptions(use_threads=False, block_size=1 << 30),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )


def polars_reader() -> Callable[[list[bytes], pa.Schema], Any] | None:
    try:
        import polars as pl
    except ImportError:
        return None
    kinds = {pa.string(): pl.String, pa.int64(): pl.Int64, pa.float64(): pl.Float64}

    def read(lines: list[bytes], schema: pa.Schema) -> Any:
        wanted = {f.name: kinds[f.type] for f in schema}
        return pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=wanted).to_arrow()

    return read


def orjson_lines(lines: list[bytes], schema: pa.Schema) -> Any:
    return [orjson.loads(line) for line in lines]


def readers() -> dict[str, Callable[[list[bytes], pa.Schema], Any]]:
    found = {"arrow": arrow, "orjson (dicts only)": orjson_lines}
    polars = polars_reader()
    if polars is not None:
        found["polars"] = polars
    return found


def speed(lines: list[bytes], batch: int, repeat: int) -> dict[str, float]:
    """Best CPU seconds of ``repeat`` passes over ``lines`` in batches, per reader."""
    schema = pa.schema(list(FIELDS.items()))
    batches = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, read in readers().items():
            start = cpu_s()
            for part in batches:
                read(part, schema)
            best[name] = min(best.get(name, float("inf")), cpu_s() - start)
    return best


def verdict(read: Callable[[list[bytes], pa.Schema], Any], line: bytes) -> str:
    try:
        out = read([b'{"a":0,"s":"y","f":0.5}', line], _SMALL)
    except Exception as e:  # any refusal is a verdict
        return f"refused ({type(e).__name__})"
    if isinstance(out, list):
        return repr(tuple(out[1].get(k) for k in ("a", "s", "f")))
    if out.num_rows != 2:
        return f"read as {out.num_rows - 1} rows"
    try:
        return repr(tuple(out.slice(1).to_pylist()[0].values()))
    except UnicodeDecodeError:
        return "read, a string of invalid UTF-8 kept"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batches", default="2500,20000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    path = generate.write(ROOT / ".cache" / "bench" / f"events-{args.events}.jsonl", args.events)
    lines = path.read_bytes().splitlines()
    names = list(readers())
    print(f"CPU s to decode {len(lines):,} lines (best of {args.repeat})\n")
    print("| lines per batch | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for batch in (int(b) for b in args.batches.split(",")):
        best = speed(lines, batch, args.repeat)
        print(f"| {batch:,} | " + " | ".join(f"{best[n]:.2f}" for n in names) + " |")
    print("\n| line | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for case, line in HOSTILE:
        cells = [verdict(read, line) for read in readers().values()]
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
