"""Tests of the aggregations: one shared harness for every CombineFn, plus their semantics."""
