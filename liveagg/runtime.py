"""Process-wide settings for the Python processes that aggregate (workers, the local runner)."""

from __future__ import annotations

import gc

#: Allocations of container objects between two young-generation collections.
GC_YOUNG_THRESHOLD = 100_000


def tune_gc() -> None:
    """Run CPython's cycle collector less often; called from each aggregating DoFn's setup.

    Aggregation allocates and keeps millions of small tuples, lists and dicts (rows, keys,
    buffered messages). At CPython's default threshold of 700 allocations the collector ran
    about 7,000 times over 300,000 events and took a fifth of the CPU, mostly scanning live
    objects it could not free; at 100,000 it runs about 30 times for a quarter of that cost.
    Reference counting still frees everything that is not in a cycle at once.
    """
    young, middle, old = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:  # never lowers a threshold the user raised further
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
