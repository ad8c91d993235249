"""The collector settings that the aggregating DoFns apply to their worker process."""

from __future__ import annotations

import subprocess
import sys

from liveagg.runtime import GC_YOUNG_THRESHOLD

# A fresh interpreter: the setting is process-wide and applied once per process.
PROBE = """
import gc
from liveagg.engine.compiled import compile_views
from liveagg.loader import load_views
from liveagg.transforms.bounded import _PreAggregate
before = gc.get_threshold()
_PreAggregate(compile_views(load_views("view_schemas/examples"))).setup()
print(before[0], *gc.get_threshold())
"""


def test_an_aggregating_dofn_raises_the_young_generation_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    before, young, middle, old = map(int, out)
    assert before == 700  # CPython's default, so the check below means something
    assert young == GC_YOUNG_THRESHOLD
    assert (middle, old) == (10, 10)  # the older generations keep their defaults


def test_tuning_twice_keeps_a_higher_threshold_set_by_the_user() -> None:
    probe = (
        "import gc\nfrom liveagg.runtime import tune_gc\n"
        "gc.set_threshold(500_000, 10, 10)\ntune_gc()\ntune_gc()\nprint(gc.get_threshold()[0])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 500_000
