"""Errors that point at a place in a view file.

Every problem found in a view is reported as ``FILE: $.json.path: message`` so that a user
(or CI log) can go straight to the field, see the value that was given and what is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liveagg.spec import ViewSpec


class ViewError(Exception):
    """One problem in a view: the file, the JSON path of the field, and what to do about it.

    Args:
        file: The file the view came from (``"<memory>"`` for views built from dicts).
        path: JSON path of the offending field, e.g. ``$.aggregation_info[0].aggregation``;
            ``$`` for the whole document.
        message: What was given and what would be accepted.

    A single argument is taken as the message alone, so that code which only knows what went
    wrong (``raise ViewError(f"view {name!r}: {e}") from e``) still produces a well-formed line.
    """

    def __init__(self, file: str, path: str | None = None, message: str | None = None) -> None:
        if path is None and message is None:
            file, path, message = "<unknown>", "$", file
        self.file = str(file)
        self.path = path if path is not None else "$"
        self.message = message if message is not None else ""
        # args keep all three parts so that the error survives pickling (Beam workers).
        super().__init__(self.file, self.path, self.message)

    @classmethod
    def in_view(cls, spec: ViewSpec, message: str, path: str = "$") -> ViewError:
        """An error about an already loaded view, placed in the file it came from: ``path``
        is relative to the view (``$.window``), and the view's own path is put before it."""
        return cls(spec.origin, spec.path(path.removeprefix("$")), message)

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"ViewError({self.file!r}, {self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ViewError):
            return NotImplemented
        return (self.file, self.path, self.message) == (other.file, other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.file, self.path, self.message))


class ViewErrors(Exception):
    """Several :class:`ViewError` at once, so that one run reports every problem, not the first.

    ``str()`` gives one error per line, in the order they were found.
    """

    def __init__(self, errors: Iterable[ViewError]) -> None:
        self.errors: list[ViewError] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def __iter__(self) -> Iterator[ViewError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


COMMAND_LINE = "<command line>"
"""The ``file`` of errors in command-line options rather than in a view file."""


class PathError(Exception):
    """A file or folder that a run cannot read or write: ``PATH: message``, one line.

    Raised for what the environment gets wrong (a missing or unreadable input, a truncated
    ``.gz``, an output folder that cannot be written, a full disk), not for bad messages,
    which are dead letters. Beam's DirectRunner re-raises an exception from a DoFn as
    ``type(exn)(exn.args[0] + " [while running 'STEP']", *exn.args[1:])``
    (``apache_beam/runners/common.py``, ``_reraise_augmented``), so the whole line is the one
    argument and ``str()`` drops that step annotation again.

    Example::

        raise PathError("logs/a.jsonl.gz", "truncated gzip data (the file ends inside a member)")
    """

    def __init__(self, path: str, message: str | None = None) -> None:
        super().__init__(path if message is None else f"{path}: {message}")

    def __str__(self) -> str:
        return _STEP_ANNOTATION.sub("", str(self.args[0]))


_STEP_ANNOTATION = re.compile(r" \[while running '[^']*'\]")


def reason(error: BaseException) -> str:
    """What went wrong with a file, in one line: ``No space left on device`` rather than
    Beam's ``Rename operation failed with exceptions {(src, dst): IOError(OSError(...))}``
    (``BeamIOError`` holds the error of each path in ``exception_details``)."""
    from apache_beam.io.filesystem import BeamIOError

    if isinstance(error, BeamIOError) and error.exception_details:
        return "; ".join(sorted({reason(e) for e in error.exception_details.values()}))
    if isinstance(error, OSError):
        inner = error.args[0] if len(error.args) == 1 else None
        if isinstance(inner, BaseException):  # Beam wraps an OSError in an IOError
            return reason(inner)
        if error.strerror:
            return error.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
