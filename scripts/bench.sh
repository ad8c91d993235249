#!/usr/bin/env bash
# Runs the benchmark: liveagg beside plain Beam, DuckDB and Quix Streams (add flink to
# --systems for liveagg on the local Flink cluster) on
# the same generated events; prints a Markdown table and writes .cache/bench/results.json.
# Services (Kafka, Cassandra, Flink) are installed and started by integration/ as needed.
#   ./scripts/bench.sh                          # liveagg, beam, duckdb, quix; 1M events
#   ./scripts/bench.sh --systems liveagg,duckdb --events 200000
LIVEAGG_EXTRAS=bench . "$(dirname "$0")/env.sh"
python -c "import quixstreams" 2>/dev/null || python -m pip install --quiet -e ".[bench]"
if [ "$#" -eq 0 ]; then
  set -- --systems liveagg,beam,duckdb,quix --scaling
fi
exec python -m benchmarks.run "$@"
