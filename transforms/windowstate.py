"""The window operator's state: a bucket of grouping keys in one cell, each key's windows
encoded apart.

The operator is keyed by a *bucket* of grouping keys (:func:`bucket_of`), not by the key:
on a portable runner each state cell costs a blocking round trip when a bundle commits it
(``SynchronousBagRuntimeState.commit`` waits on the cell's last request), and the SDK's state
cache measures a value at each store (``StateCache.put`` calls ``get_deep_size``, which scans
every module's globals: about 2 ms a call with Beam imported), so a bundle must touch few
cells, whatever the number of grouping keys it holds. Within its cell a key's windows stay
encoded (``marshal``) until a bundle touches the key: writing the cell back costs a copy of
the other keys' bytes, not their encoding, and the cache sizes the cell from a running count
(:meth:`Bucket.get_referents_for_cache`) instead of walking it.

Beside the keys, the cell keeps which keys hold each window and which of them have fired or
have data since their last pane, so that a window's timer finds its keys without decoding
the others.
"""

from __future__ import annotations

import marshal
import zlib
from collections.abc import Iterator
from typing import Any

from apache_beam.coders import Coder
from apache_beam.runners.worker.statecache import CacheAware

Window = tuple[int, int]
Windows = dict[Window, list]

#: Buckets per view variant (and shard). More: more cells (round trips) per bundle; fewer:
#: bigger cells, copied whole when a bundle writes them back.
KEY_BUCKETS = 16
_FORMAT = 1
_NEVER = -(2**62)
# Entry fields the indexes follow (see transforms/streaming.py for the whole entry).
_FIRED, _DIRTY = 2, 3


def bucket_of(key: bytes) -> int:
    """The state bucket of a grouping key: stable across processes, unlike ``hash``."""
    return zlib.crc32(key) % KEY_BUCKETS


class _Weight:
    """An object whose size is the bucket's running byte count, for the state cache."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0

    def __sizeof__(self) -> int:
        return self.bytes


class Bucket(CacheAware):
    """One cell: the grouping keys of a bucket, each key's windows as bytes until touched."""

    def __init__(
        self,
        closed_upto: int = _NEVER,
        blobs: dict[bytes, bytes] | None = None,
        members: dict[Window, set[bytes]] | None = None,
        fired: dict[Window, set[bytes]] | None = None,
        dirty: dict[Window, set[bytes]] | None = None,
    ) -> None:
        super().__init__()
        self.closed_upto = closed_upto
        self._blobs = blobs or {}
        self._members = members or {}
        self._fired = fired or {}
        self._dirty = dirty or {}
        self._open: dict[bytes, Windows] = {}  # keys decoded for this bundle
        self._before: dict[bytes, list[Window]] = {}  # their windows when decoded
        self._weight = _Weight()
        self._weight.bytes = sum(map(len, self._blobs.values())) + 64 * len(self._blobs)

    def get_referents_for_cache(self) -> list[Any]:
        return [self._weight]

    def __len__(self) -> int:
        """The grouping keys holding a window."""
        return len(self._blobs)

    def groups(self) -> Iterator[bytes]:
        return iter(list(self._blobs))

    def windows(self, group: bytes) -> Windows:
        """A key's windows, decoded (an empty dict for a key the bucket does not hold); call
        :meth:`settle` once done with the bundle's changes."""
        found = self._open.get(group)
        if found is None:
            blob = self._blobs.get(group)
            found = self._open[group] = {} if blob is None else marshal.loads(blob)
            self._before[group] = list(found)
        return found

    def members(self, window: Window) -> set[bytes]:
        """The keys holding ``window``."""
        return self._members.get(window, set())

    def windows_held(self) -> list[Window]:
        return list(self._members)

    def dirty(self, window: Window) -> set[bytes]:
        """The keys with data in ``window`` since their last pane, not yet fired."""
        return self._dirty.get(window, set())

    def due(self, window: Window, lateness_us: int) -> int | None:
        """When the window's timer must fire: its end while a key has not fired it, then
        its end + allowed lateness; None when no key holds it."""
        members = self._members.get(window)
        if not members:
            return None
        if len(self._fired.get(window, ())) < len(members):
            return window[1] - 1
        return window[1] - 1 + lateness_us

    def settle(self) -> None:
        """Encode the keys decoded since the last call and bring the indexes up to date."""
        for group, windows in self._open.items():
            old = self._blobs.get(group)
            if old is not None:
                self._weight.bytes -= len(old) + 64
                for window in self._before[group]:
                    self._forget(window, group)
            if not windows:
                self._blobs.pop(group, None)
                continue
            blob = marshal.dumps(windows)
            self._blobs[group] = blob
            self._weight.bytes += len(blob) + 64
            for window, entry in windows.items():
                self._members.setdefault(window, set()).add(group)
                if entry[_FIRED]:
                    self._fired.setdefault(window, set()).add(group)
                elif entry[_DIRTY]:
                    self._dirty.setdefault(window, set()).add(group)
        self._open = {}
        self._before = {}

    def _forget(self, window: Window, group: bytes) -> None:
        for index in (self._members, self._fired, self._dirty):
            found = index.get(window)
            if found is not None:
                found.discard(group)
                if not found:
                    del index[window]

    def state(self) -> tuple:
        return (_FORMAT, self.closed_upto, self._blobs, self._members, self._fired, self._dirty)


class BucketCoder(Coder):
    """A :class:`Bucket` as ``marshal`` bytes: its keys' windows are bytes already."""

    def encode(self, value: Bucket) -> bytes:
        value.settle()
        return marshal.dumps(value.state())

    def decode(self, encoded: bytes) -> Bucket:
        version, closed_upto, blobs, members, fired, dirty = marshal.loads(encoded)
        if version != _FORMAT:
            raise ValueError(f"window state of format {version}; this liveagg reads {_FORMAT}")
        return Bucket(closed_upto, blobs, members, fired, dirty)

    def is_deterministic(self) -> bool:
        return False
