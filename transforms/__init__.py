"""``liveagg.transforms``: the Beam transforms liveagg pipelines are built from.

The Beam adapters over :mod:`liveagg.engine` (``bounded``, ``streaming``, ``rekey``), the
runtime plan of a compiled view (``plan``), dead letters, and the sources and sinks
(:mod:`.sources`, :mod:`.sinks`; Kafka's source and sink are in :mod:`.kafka`, with the
client they share).
"""
