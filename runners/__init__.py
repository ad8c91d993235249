"""``liveagg.runners``: runner profiles, the ``--runner`` choices and their flags turned into
Beam PipelineOptions.

``direct`` (:mod:`.direct`) is Beam's DirectRunner; ``prism`` (:mod:`.prism`) runs on Prism,
Beam's Go runner, on this machine; ``flink`` (:mod:`.flink`) submits to an Apache Flink
cluster, or an embedded one, through Beam's portable FlinkRunner; ``spark`` (:mod:`.spark`) to
Beam's Spark job server (docs/runners.md).
"""

RUNNERS = ("direct", "prism", "flink", "spark")


def env(name: str) -> str | None:
    """The environment variable ``name`` (a profile's ``LIVEAGG_*`` default), or None when it
    is unset or blank."""
    import os

    value = os.environ.get(name, "").strip()
    return value or None
