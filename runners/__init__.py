"""``liveagg.runners``: runner profiles, the ``--runner`` choices and their flags turned into
Beam PipelineOptions.

``direct`` (:mod:`.direct`) is Beam's DirectRunner; ``prism`` (:mod:`.prism`) runs on Prism,
Beam's Go runner, on this machine; ``flink`` (:mod:`.flink`) submits to an Apache Flink
cluster, or an embedded one, through Beam's portable FlinkRunner; ``spark`` (:mod:`.spark`) to
Beam's Spark job server (docs/runners.md).

Each profile is its runner's settings from the environment (``liveagg.settings``) plus the
run's own flags; no profile reads the environment itself.
"""

RUNNERS = ("direct", "prism", "flink", "spark")
