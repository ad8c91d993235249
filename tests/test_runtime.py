"""The collector settings that the aggregating DoFns apply to their worker process."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

from liveagg.runtime import GC_YOUNG_THRESHOLD, collector_paused, thaw

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


def test_a_paused_batch_freezes_what_it_keeps_and_thaw_returns_it() -> None:
    kept: list[tuple[int, list[int]]] = []
    thaw()  # whatever a test that fed a DoFn without ending its bundle left frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept.extend((i, [i]) for i in range(1000))
        assert gc.isenabled()
        assert gc.get_freeze_count() >= 1000  # the tuples and lists kept, at least
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
    assert len(kept) == 1000


def test_a_collector_turned_off_by_the_user_stays_off_and_unfrozen() -> None:
    thaw()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_cycles_made_in_a_paused_batch_are_collected_when_the_bundle_thaws() -> None:
    class Node:
        other: object = None

    thaw()
    with collector_paused():
        node = Node()
        node.other = node  # a cycle: reference counting alone never frees it
        ref = weakref.ref(node)
        del node
    assert ref() is not None  # frozen, so no collection reaches it
    thaw()
    assert ref() is None
