"""Imports every built-in aggregation module, which registers its names.

:func:`liveagg.combiners.registry.builtin_names` imports this module first; a new built-in
module is added here.
"""

from liveagg.combiners import basic, exact, hll, kll, moments, ordered, topk

__all__ = ["basic", "exact", "hll", "kll", "moments", "ordered", "topk"]
