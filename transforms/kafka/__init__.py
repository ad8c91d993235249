"""``liveagg.transforms.kafka``: Kafka, read and written by one client.

* :mod:`.client`: confluent-kafka imported with an install hint, and the connection check a
  run makes once, where the pipeline is built;
* :mod:`.source`: a topic read once for all its views, bounded or as an unbounded splittable
  DoFn with a watermark per partition;
* :mod:`.sink`: rows, dead letters, milestones and a two-level run's partials produced to
  topics.

They live together because they share one concept: the same librdkafka settings
(:class:`~liveagg.settings.Connections`, ``--kafka-config``), the same connection check and
its errors, and a broker that a run both reads and writes (the intermediate topic of a
two-level run). The sink registers its ``kafka`` type with :mod:`liveagg.transforms.sinks`
like every other sink; the source is built by the pipelines (``pipelines/run.py``).
"""
