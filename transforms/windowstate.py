"""The window operator's state: a bucket of grouping keys in one cell, each (key, window)
entry encoded apart.

The operator is keyed by a *bucket* of grouping keys (:func:`bucket_of`), not by the key:
on a portable runner each state cell costs a blocking round trip when a bundle commits it
(``SynchronousBagRuntimeState.commit`` waits on the cell's last request), and the SDK's state
cache measures a value at each store (``StateCache.put`` calls ``get_deep_size``, which scans
every module's globals: about 2 ms a call with Beam imported), so a bundle must touch few
cells, whatever the number of grouping keys it holds. Within its cell each (key, window)
entry stays encoded (``marshal``) until a bundle touches it: writing the cell back costs a
copy of the other entries' bytes, not their encoding, and the cache sizes the cell from a
running count (:meth:`Bucket.get_referents_for_cache`) instead of walking it.

The entries are held per window, then per key: a window's timer finds its keys without
decoding the others, fires each key's entry of that window alone (not the key's other
windows: a key of one-minute windows with five minutes of lateness holds six), and drops the
window's entries once all have fired without decoding them. Beside them the cell keeps which
keys have fired each window or have data in it since their last pane.

**A cell is a log**, a bag state: a snapshot of the bucket, then one :class:`Delta` per bundle
that changed it, holding only the entries that bundle touched. A bundle appends its delta
(``SynchronousBagRuntimeState.commit`` sends only the added elements; the caching handler's
``extend`` appends them to the cached list), so its cost follows the entries it touched, not the
keys the bucket holds. The snapshot is written again (clear, then add) once the deltas weigh
as much as it does or number :data:`MAX_DELTAS`, which amortizes its cost over the bundles
that grew the log. With the state cache on, the cached list's first element *is* the live
:class:`Bucket`: it is changed in place and its ``seq`` says which deltas it already holds,
so a read skips them; read from the runner (no cache), the snapshot is older than the deltas
and they are applied in order.
"""

from __future__ import annotations

import marshal
import zlib
from collections.abc import Collection, Iterator
from typing import Any

import objsize  # Beam's own dependency (apache-beam requires objsize<0.8.0,>=0.6.1)
from apache_beam.coders import Coder
from apache_beam.runners.worker.statecache import CacheAware

Window = tuple[int, int]
Windows = dict[Window, list]

#: Buckets per view variant (and shard). More: more cells (round trips) per bundle; fewer:
#: bigger cells, copied whole when a bundle writes them back.
KEY_BUCKETS = 16
#: Deltas after which the snapshot is written again, whatever their weight: each is one more
#: element to skip on a read and to visit when the state cache weighs the cell.
MAX_DELTAS = 1024
_FORMAT = 5
#: Formats this liveagg reads: 5; 4 is 5 without the milestones of keys that left state (none
#: had); 3 kept each key's windows as one blob (converted when read); 2 is 3 without the expiry
#: index (no key held a global window).
_READS = (2, 3, 4, 5)
_SNAPSHOT, _DELTA = b"S", b"D"
_NEVER = -(2**62)
# Entry fields the indexes follow (see transforms/streaming.py for the whole entry); entries
# of state written before ``_EXPIRES`` existed have none.
_FIRED, _DIRTY, _EXPIRES = 2, 3, 7
#: Bytes counted for a (key, window) entry beside its blob, for the state cache's weight.
_ENTRY = 64


def size_cache_entries_cheaply() -> None:
    """Let the SDK's state cache weigh a cell without scanning every module's globals.

    ``StateCache.put`` weighs each value with ``get_deep_size`` (statecache.py), which calls
    ``objsize.get_deep_size`` without ``exclude_modules_globals``; objsize's default (True)
    then adds the ``vars()`` of every loaded module to its exclusion set on each call
    (``_iter_modules_globals`` in objsize/traverse.py): about 1.2 ms a put with Beam and
    liveagg loaded, paid by every bundle for every cell it writes. Beam's ``_filter_func``
    already skips modules, types and functions, so nothing a cell holds reaches a module's
    globals, and a cell weighs itself (:meth:`Bucket.get_referents_for_cache`): measuring
    without that set gives the same weights at about 10 us. This changes objsize's default
    for the worker process, whose only user of it is Beam's state cache."""
    objsize.default_settings.update(exclude_modules_globals=False)


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


class Delta(CacheAware):
    """The (key, window) entries one bundle changed (their new bytes; None: the key left
    the window), the milestones of keys that left state it changed (:meth:`Bucket.spend`;
    None: handed back), and the bucket's ``closed_upto`` after it. Its weight is counted in
    its bucket's."""

    __slots__ = ("changes", "closed_upto", "seq", "spent")

    def __init__(
        self,
        seq: int,
        closed_upto: int,
        changes: dict[tuple[bytes, Window], bytes | None],
        spent: dict[tuple[bytes, Window], list[int] | None] | None = None,
    ) -> None:
        self.seq = seq
        self.closed_upto = closed_upto
        self.changes = changes
        self.spent = spent or {}

    def get_referents_for_cache(self) -> list[Any]:
        return []

    def weight(self) -> int:
        changed = sum(_ENTRY + len(blob or b"") for blob in self.changes.values())
        return changed + _ENTRY * len(self.spent)


class Bucket(CacheAware):
    """One cell: the grouping keys of a bucket, each (key, window) entry as bytes until a
    bundle touches it."""

    def __init__(
        self,
        closed_upto: int = _NEVER,
        blobs: dict[Window, dict[bytes, bytes]] | None = None,
        fired: dict[Window, set[bytes]] | None = None,
        dirty: dict[Window, set[bytes]] | None = None,
        seq: int = 0,
        expiry: dict[Window, dict[bytes, int]] | None = None,
        spent: dict[Window, dict[bytes, list[int]]] | None = None,
    ) -> None:
        super().__init__()
        #: The latest watermark this bucket's own timers showed (one of them fired at it).
        self.closed_upto = closed_upto
        #: The last delta this bucket holds; 0 for a bucket never stored.
        self.seq = seq
        self._deltas = 0  # deltas stored after the snapshot
        self._delta_bytes = 0
        #: Per window, its keys' entries as ``marshal`` bytes: also the index of its keys.
        self._blobs = blobs or {}
        self._fired = fired or {}
        self._dirty = dirty or {}
        #: When each key of a window leaves state (``state_ttl`` of a global window), µs.
        self._expiry = expiry or {}
        #: Per window, the milestones each key that left it by its ``state_ttl`` had fired:
        #: a key that comes back starts a new total, but a threshold fires at most once per
        #: run (SPEC 1b). A few bytes per such key, kept for the run.
        self._spent = spent or {}
        self._spent_changes: dict[tuple[bytes, Window], list[int] | None] = {}
        #: Per key, the windows it holds (stored): the window itself while it holds one (most
        #: keys: a set per key would cost about 200 bytes more each), else a set.
        self._held: dict[bytes, Window | set[Window]] = {}
        #: Each window's own tuple, which the keys' ``_held`` share.
        self._canon: dict[Window, Window] = {}
        self._weight = _Weight()
        for window, entries in self._blobs.items():
            self._canon[window] = window
            for group, blob in entries.items():
                self._hold(group, window)
                self._weight.bytes += len(blob) + _ENTRY
        self._weight.bytes += _ENTRY * sum(map(len, self._spent.values()))
        self._open: dict[bytes, Windows] = {}  # entries decoded (or added) for this bundle
        self._covered: dict[bytes, set[Window]] = {}  # the stored windows each answers for

    def get_referents_for_cache(self) -> list[Any]:
        return [self._weight]

    def __len__(self) -> int:
        """The grouping keys holding a window (as stored)."""
        return len(self._held)

    def groups(self) -> Iterator[bytes]:
        return iter(list(self._held))

    def windows(self, group: bytes) -> Windows:
        """All of a key's windows, decoded (an empty dict for a key the bucket does not
        hold), to change in place, add to or delete from; call :meth:`settle` once done with
        the bundle's changes. The entries are those :meth:`entry` returns."""
        found = self._opened(group)
        covered = self._covered[group]
        for window in self._held_by(group):
            if window not in covered:
                covered.add(window)
                found[window] = marshal.loads(self._blobs[window][group])
        return found

    def entry(self, group: bytes, window: Window) -> list | None:
        """One window's entry of a key, decoded alone (None: the key does not hold it)."""
        found = self._opened(group)
        entry = found.get(window)
        if entry is None and window not in self._covered[group]:
            blob = self._blobs.get(window, {}).get(group)
            if blob is not None:
                self._covered[group].add(window)
                entry = found[window] = marshal.loads(blob)
        return entry

    def put(self, group: bytes, window: Window, entry: list) -> None:
        """Give a key the entry of a window it does not hold."""
        self._opened(group)[window] = entry

    def drop(self, group: bytes, window: Window) -> None:
        """A key leaves a window, its entry not decoded."""
        self._opened(group).pop(window, None)
        if window in self._held_by(group):
            self._covered[group].add(window)

    def holds(self, group: bytes) -> bool:
        """Whether the key holds a window, this bundle's changes included."""
        found = self._open.get(group)
        if found:
            return True
        if group not in self._held:
            return False
        if found is None:  # not opened this bundle: its stored windows stand
            return True
        covered = self._covered[group]
        return any(w not in covered for w in self._held_by(group))

    def _held_by(self, group: bytes) -> tuple[Window, ...] | set[Window]:
        """The windows a key holds (stored)."""
        held = self._held.get(group, ())
        return (held,) if type(held) is tuple and held else held

    def _hold(self, group: bytes, window: Window) -> None:
        held = self._held.get(group)
        if held is None:
            self._held[group] = window
        elif type(held) is tuple:
            if held != window:
                self._held[group] = {held, window}
        else:
            held.add(window)

    def _opened(self, group: bytes) -> Windows:
        found = self._open.get(group)
        if found is None:
            found = self._open[group] = {}
            self._covered[group] = set()
        return found

    def spend(self, group: bytes, window: Window, fired: list[int]) -> None:
        """Keep the milestones a key fired in ``window`` as it leaves state by its TTL."""
        self._set_spent(group, window, fired)
        self._spent_changes[group, window] = fired

    def take_spent(self, group: bytes, window: Window) -> list[int] | None:
        """The milestones a key fired in ``window`` before it left state (None: none), for
        the entry it starts now, which keeps them from here on."""
        fired = self._spent.get(window, {}).get(group)
        if fired is not None:
            self._set_spent(group, window, None)
            self._spent_changes[group, window] = None
        return fired

    def _set_spent(self, group: bytes, window: Window, fired: list[int] | None) -> None:
        found = self._spent.get(window)
        had = found is not None and group in found
        if fired is None:
            if had:
                del found[group]  # type: ignore[union-attr]
                if not found:
                    del self._spent[window]
                self._weight.bytes -= _ENTRY
            return
        self._spent.setdefault(window, {})[group] = fired
        if not had:
            self._weight.bytes += _ENTRY

    def members(self, window: Window) -> Collection[bytes]:
        """The keys holding ``window``."""
        return self._blobs.get(window, {}).keys()

    def fired(self, window: Window) -> set[bytes]:
        """The keys whose (stored) entry of ``window`` has fired."""
        return self._fired.get(window, set())

    def expired(self, window: Window, now: int) -> list[bytes]:
        """The keys of ``window`` whose ``state_ttl`` has passed by ``now``, found in the
        index of expiries without decoding any key."""
        expiry = self._expiry.get(window)
        return [group for group, at in expiry.items() if at <= now] if expiry else []

    def windows_held(self) -> list[Window]:
        return list(self._blobs)

    def dirty(self, window: Window) -> set[bytes]:
        """The keys with data in ``window`` since their last pane, not yet fired."""
        return self._dirty.get(window, set())

    def due(self, window: Window, lateness_us: int) -> int | None:
        """When the window's timer must fire: its end while a key has not fired it, then
        its end + allowed lateness, or before either when a key's state expires (a global
        window's ``state_ttl``); None when no key holds it."""
        members = self._blobs.get(window)
        if not members:
            return None
        if len(self._fired.get(window, ())) < len(members):
            due = window[1] - 1
        else:
            due = window[1] - 1 + lateness_us
        expiry = self._expiry.get(window)
        return min(due, min(expiry.values())) if expiry else due

    def settle(self) -> dict[tuple[bytes, Window], bytes | None]:
        """Encode the entries decoded or added since the last call and bring the indexes up
        to date; returns their new bytes (None for an entry the key no longer holds)."""
        changes: dict[tuple[bytes, Window], bytes | None] = {}
        for group, found in self._open.items():
            for window in self._covered[group]:
                if window not in found:
                    self._set(group, window, None, None)
                    changes[group, window] = None
            for window, entry in found.items():
                blob = marshal.dumps(entry)
                if blob != self._blobs.get(window, {}).get(group):
                    self._set(group, window, blob, entry)
                    changes[group, window] = blob
        self._open = {}
        self._covered = {}
        return changes

    def apply(self, delta: Delta) -> None:
        """Replay a stored delta on a bucket read from an older snapshot."""
        for change, blob in delta.changes.items():
            if type(change) is bytes:  # format 3: the key's whole windows (None: it left)
                windows = {} if blob is None else marshal.loads(blob)
                for window in set(self._held_by(change)) - windows.keys():
                    self._set(change, window, None, None)
                for window, entry in windows.items():
                    self._set(change, window, marshal.dumps(entry), entry)
                continue
            group, window = change
            self._set(group, window, blob, None if blob is None else marshal.loads(blob))
        for (group, window), fired in delta.spent.items():
            self._set_spent(group, window, fired)
        self.closed_upto = max(self.closed_upto, delta.closed_upto)
        self.seq = delta.seq

    def _set(self, group: bytes, window: Window, blob: bytes | None, entry: list | None) -> None:
        """Make ``blob`` (decoded: ``entry``; None: none) the key's entry of ``window``,
        indexed."""
        entries = self._blobs.get(window)
        old = None if entries is None else entries.get(group)
        if old is not None:
            self._weight.bytes -= len(old) + _ENTRY
        if blob is None or entry is None:
            if entries is None or old is None:
                return
            del entries[group]
            if not entries:
                del self._blobs[window]
                del self._canon[window]
            held = self._held[group]
            if type(held) is tuple:
                del self._held[group]
            else:
                held.discard(window)
                if len(held) == 1:
                    self._held[group] = held.pop()
            for index in (self._fired, self._dirty, self._expiry):
                _discard(index, window, group)
            return
        if entries is None:
            entries = self._blobs[window] = {}
            self._canon[window] = window
        else:
            window = self._canon[window]
        entries[group] = blob
        self._weight.bytes += len(blob) + _ENTRY
        if old is None:
            self._hold(group, window)
        if entry[_FIRED]:
            self._fired.setdefault(window, set()).add(group)
            _discard(self._dirty, window, group)
        else:
            _discard(self._fired, window, group)
            if entry[_DIRTY]:
                self._dirty.setdefault(window, set()).add(group)
            else:
                _discard(self._dirty, window, group)
        if len(entry) > _EXPIRES and entry[_EXPIRES] is not None:
            self._expiry.setdefault(window, {})[group] = entry[_EXPIRES]
        else:
            _discard(self._expiry, window, group)

    def store(self, cell: Any, closed_before: int) -> None:
        """Append this bundle's changes to the cell (a bag state) as a delta, or write the
        bucket again as a snapshot when the deltas have grown (see the module doc)."""
        changes = self.settle()
        spent, self._spent_changes = self._spent_changes, {}
        if not changes and not spent and self.closed_upto == closed_before:
            return
        self.seq += 1
        snapshot_bytes = self._weight.bytes - self._delta_bytes
        # A bucket no key holds a window of stays, as a snapshot of a few bytes: its
        # ``closed_upto`` still judges late data for its keys.
        if (
            self.seq == 1
            or not self._blobs
            or self._deltas >= MAX_DELTAS
            or self._delta_bytes >= snapshot_bytes
        ):
            cell.clear()
            cell.add(self)
            self._weight.bytes -= self._delta_bytes
            self._deltas = self._delta_bytes = 0
            return
        delta = Delta(self.seq, self.closed_upto, changes, spent)
        cell.add(delta)
        self._deltas += 1
        weight = delta.weight()
        self._delta_bytes += weight
        self._weight.bytes += weight  # the cached log holds the delta beside the bucket

    @classmethod
    def load(cls, cell: Any) -> Bucket:
        """The bucket a cell's log holds: its snapshot with the deltas it does not hold."""
        parts = iter(cell.read())
        bucket = next(parts, None)
        if bucket is None:
            return cls()
        if not isinstance(bucket, Bucket):
            raise ValueError("window state: a cell's log starts with a delta, not a snapshot")
        for delta in parts:
            if delta.seq > bucket.seq:  # not a delta the cached bucket holds already
                bucket.apply(delta)
                weight = delta.weight()
                bucket._deltas += 1
                bucket._delta_bytes += weight
                bucket._weight.bytes += weight
        return bucket

    def state(self) -> tuple:
        return (
            _FORMAT,
            self.seq,
            self.closed_upto,
            self._blobs,
            self._fired,
            self._dirty,
            self._expiry,
            self._spent,
        )


class BucketCoder(Coder):
    """A cell's log entries, a :class:`Bucket` or a :class:`Delta`, as ``marshal`` bytes:
    their keys' windows are bytes already."""

    def encode(self, value: Bucket | Delta) -> bytes:
        if isinstance(value, Delta):
            return _DELTA + marshal.dumps(
                (value.seq, value.closed_upto, value.changes, value.spent)
            )
        value.settle()
        return _SNAPSHOT + marshal.dumps(value.state())

    def decode(self, encoded: bytes) -> Bucket | Delta:
        kind, body = encoded[:1], marshal.loads(encoded[1:])
        if kind == _DELTA:
            return Delta(*body)
        version = body[0]
        if kind != _SNAPSHOT or version not in _READS:
            raise ValueError(
                f"window state of format {version}; this liveagg reads "
                f"{', '.join(map(str, _READS))}"
            )
        if version in (4, _FORMAT):
            _, seq, closed_upto, blobs, fired, dirty, expiry, *spent = body
            return Bucket(closed_upto, blobs, fired, dirty, seq, expiry, *spent)
        _, seq, closed_upto, per_key, _members, fired, dirty, *expiry = body
        return Bucket(closed_upto, _per_window(per_key), fired, dirty, seq, *expiry)

    def is_deterministic(self) -> bool:
        return False


def _per_window(per_key: dict[bytes, bytes]) -> dict[Window, dict[bytes, bytes]]:
    """Format 3's blobs (per key, the marshal of its windows) as format 4's (per window, the
    marshal of each key's entry)."""
    blobs: dict[Window, dict[bytes, bytes]] = {}
    for group, blob in per_key.items():
        for window, entry in marshal.loads(blob).items():
            blobs.setdefault(window, {})[group] = marshal.dumps(entry)
    return blobs


def _discard(index: dict[Window, Any], window: Window, group: bytes) -> None:
    """Take a key out of a window's set (or dict) in an index, and the window once empty."""
    found = index.get(window)
    if found is not None and group in found:
        if type(found) is dict:
            del found[group]
        else:
            found.discard(group)
        if not found:
            del index[window]
