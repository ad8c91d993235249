"""``liveagg.combiners``: aggregations, Beam CombineFns with a stable accumulator encoding,
found by name."""

from liveagg.combiners._common import shown
from liveagg.combiners.base import AccumulatorCoder, InputError, LiveaggCombineFn
from liveagg.combiners.registry import builtin_names, create, known, register

__all__ = [
    "AccumulatorCoder",
    "InputError",
    "LiveaggCombineFn",
    "builtin_names",
    "create",
    "known",
    "register",
    "shown",
]
