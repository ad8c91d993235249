"""The Kafka read's module name before :mod:`liveagg.transforms.kafka`, kept for stored state
only: nothing imports it.

The read's elements (:class:`PartitionRead`) have no coder of their own, so Beam encodes them
with its pickling fallback, which names a class by its module; a Flink checkpoint or
savepoint taken by a build before the move holds them under this name, and restoring it
imports this module to decode them.
"""

from liveagg.transforms.kafka.source import PartitionRead

__all__ = ["PartitionRead"]
