"""liveagg: real-time aggregation views on Apache Beam."""

__version__ = "0.1.0"
