"""Pipelines compiled from views."""
