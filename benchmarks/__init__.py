"""Benchmarks: liveagg side by side with plain Beam, DuckDB, Flink and Quix Streams."""
