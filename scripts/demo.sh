#!/usr/bin/env bash
# Runs the example views on the bundled example messages with the DirectRunner.
# Results: out/demo/<view>/*.jsonl, dead letters: out/demo/_dead_letter/, milestone events:
# out/demo/_milestones/.
. "$(dirname "$0")/env.sh"
out="${1:-out/demo}"
liveagg validate view_schemas/examples
liveagg run --views view_schemas/examples --input examples/data/events.jsonl --output "$out"
echo "rows are in $out/<view>/ (one JSON Lines file per window, global-NN.jsonl for running totals), dead letters in $out/_dead_letter/"
echo "milestones in $out/_milestones/, the first three of post_engagement:"
head -n 3 "$out/_milestones/post_engagement.jsonl"
