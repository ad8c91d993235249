"""Copyable examples of extending liveagg."""
