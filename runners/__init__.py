"""Runner profiles: the ``--runner`` choices and their flags turned into Beam PipelineOptions.

``direct`` (:mod:`.direct`) runs in this process; ``flink`` (:mod:`.flink`) submits to an
Apache Flink cluster, or an embedded one, through Beam's portable FlinkRunner.
"""

RUNNERS = ("direct", "prism", "flink")
