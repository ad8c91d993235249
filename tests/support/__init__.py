"""Test support: a data generator, an independent DuckDB oracle and a row comparator.

* :mod:`tests.support.datagen` writes realistic JSON Lines input (skewed keys, disorder,
  nulls and bad lines of every kind), deterministic per seed.
* :mod:`tests.support.oracle` computes, with DuckDB SQL only, the rows a bounded run of a
  view must produce. It shares no code with the pipeline.
* :mod:`tests.support.compare` matches the pipeline's rows against the oracle's, exactly
  for exact aggregations and within stated bounds for sketches.
* :mod:`tests.support.beam_panes` runs a TestStream through plain Beam and the streaming
  path side by side and names every difference between their panes.
* :mod:`tests.support.eventtime_cases` and :mod:`tests.support.field_cases` are the tables
  of event-time strings and field reads that both the pipeline and the oracle are tested on.
* :mod:`tests.support.waiting` polls real services until a deadline, waiting out only their
  transient states; :mod:`tests.support.kafka_topics` makes and reads topics with it.
"""
