"""``liveagg.engine``: the aggregation engine, free of Beam.

Every execution path (the bounded path, the streaming operator, both levels of a two-level
run) is a thin Beam adapter over these modules:

* :mod:`.windows`: the window book: which windows an event time falls in, how sessions merge,
  and whether a window is open, late or closed for a watermark;
* :mod:`.columns`: a batch of raw messages decoded once into the typed columns its views need,
  with dead letters for what no view can use;
* :mod:`.kernels`: each built-in aggregation computed over columns, with a state that turns
  losslessly into the aggregation's CombineFn accumulator (custom CombineFns run row-wise);
* :mod:`.partials`: a view's pre-aggregated state, one row per (variant, window, grouping key):
  pre-aggregated at the finest grain, rolled up to grouping sets and granularities, merged,
  sharded and extracted into output rows.
"""
