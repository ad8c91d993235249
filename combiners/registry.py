"""Name -> aggregation class registry, filled by a decorator and by entry points.

Built-ins register themselves with :func:`register`; third-party packages add names under
the entry-point group ``liveagg.combiners``; ``"aggregation": "custom"`` loads a class by
its dotted path ``"package.module:ClassName"``.

A view file is data, not code. Whatever a view names is resolved to a class and checked to
be a subclass of :class:`~liveagg.combiners.LiveaggCombineFn` before anything in it is
called: a view that names ``os:system`` or ``subprocess:Popen`` is refused, not run. The one
piece of code that naming a module runs is that module's own top-level code, when it is
imported; so modules of Python's standard library (which hold no aggregation) and
``__main__`` modules (a program's entry point) are refused before any import, and any other
module must be installed where the view is checked (see docs/custom_combiners.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import sysconfig
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import apache_beam as beam

from liveagg.combiners.base import OUTPUT_TYPES, LiveaggCombineFn

ENTRY_POINT_GROUP = "liveagg.combiners"

CombinerClass = type[LiveaggCombineFn]
_BUILTINS: dict[str, CombinerClass] = {}

#: What a ``combine_fn`` or an entry point must name, as error messages say it.
ACCEPTED = "a subclass of liveagg.combiners.LiveaggCombineFn"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")


class CombinerNotFound(ValueError):
    """A ``combine_fn`` or a registered name does not resolve to an aggregation class.

    Raised before anything the reference names is called; the message says what was given
    and what is accepted.
    """


def register(name: str) -> Callable[[CombinerClass], CombinerClass]:
    """Register a :class:`LiveaggCombineFn` subclass under ``name``.

    The class is built with the view's ``params`` as keyword arguments.
    """

    def decorate(cls: CombinerClass) -> CombinerClass:
        if not (isinstance(cls, type) and issubclass(cls, LiveaggCombineFn)):
            raise TypeError(f"aggregation {name!r}: register {ACCEPTED}, not {cls!r}")
        if name in _BUILTINS:
            raise ValueError(f"aggregation {name!r} is registered twice")
        _BUILTINS[name] = cls
        return cls

    return decorate


def _entry_point_factories() -> dict[str, EntryPoint]:
    """The entry points of the group by name; reading them imports nothing."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known() -> list[str]:
    """Every aggregation name a view may use, sorted; ``custom`` included."""
    _load_builtins()
    return sorted({*_BUILTINS, *_entry_point_factories(), "custom"})


def builtin_names() -> list[str]:
    _load_builtins()
    return sorted(_BUILTINS)


def is_builtin(kind: str) -> bool:
    """Whether ``kind`` is one of liveagg's own aggregations (safe to build at validation)."""
    _load_builtins()
    return kind in _BUILTINS


def builtin_kind(cls: type) -> str | None:
    """The built-in aggregation whose class is exactly ``cls``, if any: a ``custom``
    aggregation may name one (``liveagg.combiners.basic:SumFn``), and then takes its values
    as that built-in does."""
    _load_builtins()
    return next((name for name, known in _BUILTINS.items() if known is cls), None)


def load_dotted(path: str) -> CombinerClass:
    """Resolve ``"package.module:ClassName"`` to a :class:`LiveaggCombineFn` subclass.

    Imports the module (which runs its top-level code) and reads the attribute; calls
    nothing else.

    Raises:
        CombinerNotFound: for a malformed reference, a standard-library or ``__main__``
            module (refused before importing), a module that does not import, a missing
            attribute, or an attribute that is not such a class.
    """
    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        raise CombinerNotFound(
            f"{_cut(repr(path))} is not a combine_fn reference; expected 'package.module:ClassName'"
        )
    module_name, _, attr = path.partition(":")
    parts = module_name.split(".")
    wanted = f"expected 'package.module:ClassName' naming {ACCEPTED} in an installed package"
    if _in_standard_library(parts[0]):
        raise CombinerNotFound(
            f"{path!r} names {parts[0]!r}, a module of Python's standard library, which holds "
            f"no aggregation; {wanted}"
        )
    if any(p.startswith("__") for p in parts):
        raise CombinerNotFound(
            f"{path!r} names a special module (such as __main__, which runs a program when "
            f"imported); module names starting with '__' are refused; {wanted}"
        )
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # missing, or the module's own code failed or exited
        raise CombinerNotFound(
            f"{path!r}: cannot import module {module_name!r} ({type(e).__name__}: "
            f"{_cut(str(e))}); {wanted}"
        ) from e
    try:
        target = getattr(module, attr)
    except Exception as e:  # AttributeError, or whatever a module __getattr__ raises
        raise CombinerNotFound(
            f"{path!r}: module {module_name!r} has no attribute {attr!r}; {wanted}"
        ) from e
    return _checked(target, repr(path))


def _in_standard_library(name: str) -> bool:
    """Whether the top-level module ``name`` is Python's own, found without importing it.

    ``sys.stdlib_module_names`` leaves out CPython's ``test`` package, whose ``autotest``
    module runs the whole regression suite when imported; so a module is also Python's when
    it is built in, frozen, or lives in the standard library's folders outside
    site-packages.
    """
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    try:  # a top-level spec: the import system's finders, no module's code
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # ValueError: in sys.modules without a __spec__
        return False
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    paths = sysconfig.get_paths()
    libraries = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib")}
    packages = {Path(paths[k]).resolve() for k in ("purelib", "platlib")}
    places = list(spec.submodule_search_locations or []) or [spec.origin or ""]
    for place in places:
        where = Path(place).resolve()
        in_library = any(where.is_relative_to(lib) for lib in libraries)
        if in_library and not any(where.is_relative_to(pkg) for pkg in packages):
            return True
    return False


def load_entry_point(kind: str, point: EntryPoint) -> CombinerClass:
    """The class an entry point of ``liveagg.combiners`` names, checked like a combine_fn."""
    where = f"registered by the entry point {point.name} = {point.value!r} ({ENTRY_POINT_GROUP})"
    try:
        target = point.load()
    except (Exception, SystemExit) as e:
        raise CombinerNotFound(
            f"aggregation {kind!r} {where} does not load ({type(e).__name__}: {_cut(str(e))})"
        ) from e
    return _checked(target, f"aggregation {kind!r} {where}")


#: The methods an aggregation implements: Beam's four (``add_inputs`` may stand for
#: ``add_input``) and the accumulator's bytes. The bases' own raise NotImplementedError.
_REQUIRED = (
    ("create_accumulator",),
    ("add_input", "add_inputs"),
    ("merge_accumulators",),
    ("extract_output",),
    ("encode_accumulator",),
    ("decode_accumulator",),
)
_BASES = (LiveaggCombineFn, beam.CombineFn, object)


def _missing_methods(cls: type) -> list[str]:
    """The required methods ``cls`` inherits from the bases only, read from the classes'
    ``__dict__`` along the MRO (no attribute lookup that a metaclass could intercept)."""
    missing = []
    for names in _REQUIRED:
        owners = [
            next((k for k in type.__getattribute__(cls, "__mro__") if name in vars(k)), object)
            for name in names
        ]
        if all(owner in _BASES for owner in owners):
            missing.append(names[0])
    return missing


def _checked(target: Any, given: str) -> CombinerClass:
    """``target`` if it is a proper aggregation class; otherwise say what it is instead."""
    try:
        is_class = isinstance(target, type) and issubclass(target, LiveaggCombineFn)
    except TypeError:  # an object whose __class__ claims type
        raise CombinerNotFound(
            f"{given} is a {type(target).__name__} instance that poses as a class; "
            f"expected {ACCEPTED}"
        ) from None
    if is_class:
        if target is LiveaggCombineFn:
            raise CombinerNotFound(
                f"{given} is the base class itself; name your subclass of it, which "
                "implements the aggregation"
            )
        name = type.__getattribute__(target, "__name__")
        if name.startswith("_"):
            raise CombinerNotFound(
                f"{given} is the private class {name} of {target.__module__}, a part of an "
                f"implementation, not an aggregation; expected {ACCEPTED}"
            )
        missing = _missing_methods(target)
        if missing:
            raise CombinerNotFound(
                f"{given} is the class {name}, which does not implement "
                f"{', '.join(missing)}; an aggregation implements create_accumulator, "
                "add_input, merge_accumulators, extract_output, encode_accumulator and "
                "decode_accumulator (docs/custom_combiners.md)"
            )
        return target
    if isinstance(target, type):
        if issubclass(target, beam.CombineFn):
            what = (
                f"a Beam CombineFn ({target.__name__}) that does not subclass "
                "LiveaggCombineFn, so it does not say how its accumulator is written to bytes"
            )
        else:
            what = f"the class {target.__name__}, which is not a CombineFn"
    elif inspect.ismodule(target):
        what = "a module, not a class"
    elif inspect.isroutine(target):
        what = "a function, not a class"
    else:
        what = f"a {type(target).__name__} instance, not a class"
    raise CombinerNotFound(f"{given} is {what}; expected {ACCEPTED}")


def resolve(kind: str, params: Mapping[str, Any] | None = None) -> CombinerClass:
    """The class an aggregation name (and, for ``custom``, ``params.combine_fn``) names.

    Calls nothing in the class. Raises ``ValueError`` naming the known aggregations when
    ``kind`` is unknown, :class:`CombinerNotFound` when the name does not give a class.
    """
    _load_builtins()
    if kind == "custom":
        path = (params or {}).get("combine_fn")
        if not isinstance(path, str):
            raise CombinerNotFound(
                "custom aggregation needs params.combine_fn 'package.module:ClassName'"
            )
        return load_dotted(path)
    if kind in _BUILTINS:
        return _BUILTINS[kind]
    points = _entry_point_factories()
    if kind not in points:
        raise ValueError(f"unknown aggregation {kind!r}; known: {', '.join(known())}")
    return load_entry_point(kind, points[kind])


def class_params(kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments the class receives: ``params`` without ``combine_fn``."""
    out = dict(params or {})
    if kind == "custom":
        out.pop("combine_fn", None)
    return out


def check_params(kind: str, cls: CombinerClass, params: Mapping[str, Any]) -> None:
    """Refuse unknown or missing params by the class's signature, without calling it.

    Raises:
        ValueError: listing the accepted params.
    """
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no introspectable signature: the class decides at run
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


def create(kind: str, params: Mapping[str, Any] | None = None) -> LiveaggCombineFn:
    """Build the CombineFn for an aggregation name and its params.

    The class is resolved and its params checked against its signature first, so that a
    reference to anything but an aggregation class is refused without being called.

    Raises:
        ValueError: for an unknown ``kind`` (naming the known ones), a reference that is not
            an aggregation class (:class:`CombinerNotFound`), or params the class refuses.
    """
    cls = resolve(kind, params)
    arguments = class_params(kind, params)
    check_params(kind, cls, arguments)
    fn = cls(**arguments)
    if not isinstance(fn, LiveaggCombineFn):  # a __new__ that returns something else
        raise ValueError(
            f"aggregation {kind!r} built a {type(fn).__name__}, which is not a "
            "liveagg.combiners.LiveaggCombineFn (it must say how its accumulator is encoded)"
        )
    declared = fn.output_type()  # sinks type their columns by it: checked before any message
    if declared not in OUTPUT_TYPES:
        raise ValueError(
            f"aggregation {kind!r}: output_type() returned {declared!r}; expected one of "
            f"{', '.join(sorted(OUTPUT_TYPES))}"
        )
    return fn


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    importlib.import_module("liveagg.combiners.builtins")
