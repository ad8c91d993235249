#!/usr/bin/env bash
# The test suite: lint, view validation, unit and end-to-end tests.
. "$(dirname "$0")/env.sh"
ruff check .
ruff format --check .
liveagg validate view_schemas/examples
python -m pytest "$@"
