"""The Kafka read's module name before :mod:`liveagg.transforms.kafka`, kept for stored state
only: nothing imports it.

The read's elements (:class:`PartitionRead`) have no coder of their own, so Beam encodes them
with ``FastPrimitivesCoder``, whose fallback for a type it does not know is its pickler
(Beam 2.77, ``coders.py`` 1060-1067: "For unknown types, falls back to another coder (e.g.
PickleCoder)"; ``coder_impl.py`` 483-484: ``stream.write_byte(UNKNOWN_TYPE)``,
``self.fallback_coder_impl.encode_to_stream(value, stream, nested)``), and a pickle names a
class by its module. A Flink checkpoint or savepoint taken by a build before the move holds
them under this name, and restoring it imports this module to decode them.
"""

from liveagg.transforms.kafka.source import PartitionRead

__all__ = ["PartitionRead"]
