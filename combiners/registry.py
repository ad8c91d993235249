"""Name -> aggregation factory registry, filled by a decorator and by entry points.

Built-ins register themselves with :func:`register`; third-party packages add names under
the entry-point group ``liveagg.combiners``; ``"aggregation": "custom"`` loads a class by
its dotted path ``"package.module:ClassName"``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from liveagg.combiners.base import LiveaggCombineFn

ENTRY_POINT_GROUP = "liveagg.combiners"

Factory = Callable[..., LiveaggCombineFn]
_BUILTINS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register a factory (usually the CombineFn class) under ``name``.

    The factory is called with the view's ``params`` as keyword arguments.
    """

    def decorate(factory: Factory) -> Factory:
        if name in _BUILTINS:
            raise ValueError(f"aggregation {name!r} is registered twice")
        _BUILTINS[name] = factory
        return factory

    return decorate


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known() -> list[str]:
    """Every aggregation name a view may use, sorted; ``custom`` included."""
    _load_builtins()
    return sorted({*_BUILTINS, *_entry_point_factories(), "custom"})


def builtin_names() -> list[str]:
    _load_builtins()
    return sorted(_BUILTINS)


def load_dotted(path: str) -> Factory:
    """Import ``"package.module:ClassName"``; errors say what was expected."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"combine_fn {path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"cannot import module {module_name!r} for combine_fn {path!r}: {e}"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from e


def create(kind: str, params: Mapping[str, Any] | None = None) -> LiveaggCombineFn:
    """Build the CombineFn for an aggregation name and its params.

    Raises ``ValueError`` naming the known aggregations when ``kind`` is unknown.
    """
    _load_builtins()
    params = dict(params or {})
    if kind == "custom":
        path = params.pop("combine_fn", None)
        if not isinstance(path, str):
            raise ValueError(
                "custom aggregation needs params.combine_fn 'package.module:ClassName'"
            )
        factory = load_dotted(path)
    elif kind in _BUILTINS:
        factory = _BUILTINS[kind]
    else:
        eps = _entry_point_factories()
        if kind not in eps:
            raise ValueError(f"unknown aggregation {kind!r}; known: {', '.join(known())}")
        factory = eps[kind].load()
    _check_params(kind, factory, params)
    fn = factory(**params)
    if not isinstance(fn, LiveaggCombineFn):
        raise ValueError(
            f"aggregation {kind!r} built a {type(fn).__name__}, which is not a "
            "liveagg.combiners.LiveaggCombineFn (it must say how its accumulator is encoded)"
        )
    return fn


def _check_params(kind: str, factory: Factory, params: Mapping[str, Any]) -> None:
    """Refuse unknown or missing params with a ``ValueError`` that lists the accepted ones."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: let the factory decide
        return
    try:
        signature.bind(**params)
    except TypeError as e:
        accepted = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise ValueError(
            f"aggregation {kind!r}: invalid params ({e}); accepted: {', '.join(accepted) or 'none'}"
        ) from e


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    importlib.import_module("liveagg.combiners.builtins")
