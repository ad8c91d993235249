"""Beam transforms that liveagg pipelines are built from."""
