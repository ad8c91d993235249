from hypothesis import given
from hypothesis import strategies as st

from liveagg.transforms import windows

TIMES = st.integers(min_value=-(10**15), max_value=10**15)


@given(TIMES, st.integers(min_value=1, max_value=10**10))
def test_fixed_contains_and_aligns(ts: int, size: int) -> None:
    [(start, end)] = windows.fixed(size)(ts)
    assert start <= ts < end
    assert end - start == size
    assert start % size == 0  # aligned to the epoch, negative times included


@given(TIMES, st.integers(1, 50), st.integers(1, 50))
def test_sliding_is_every_window_that_contains_ts(ts: int, periods: int, period: int) -> None:
    size = periods * period + (period // 2)  # sizes need not be multiples of the period
    got = sorted(windows.sliding(size, period)(ts))
    first = (ts - size) - (ts - size) % period - period
    brute = [
        (s, s + size)
        for s in range(first, ts + period, period)
        if s % period == 0 and s <= ts < s + size
    ]
    assert got == brute


def test_daily_window_is_a_utc_day() -> None:
    day = 86_400_000_000
    ts = 1357034400_000000  # 2013-01-01T10:00:00Z
    assert windows.fixed(day)(ts) == [(1356998400_000000, 1356998400_000000 + day)]


def _brute(assign: object, low: int, high: int) -> tuple[int, int] | None:
    """The first and last time in [low, high] whose windows all lie in it, by trying all."""
    fits = [
        ts
        for ts in range(low, high + 1)
        if all(low <= start and end <= high for start, end in assign(ts))  # type: ignore[operator]
    ]
    return (fits[0], fits[-1]) if fits else None


def _accepted(interval: tuple[int, int]) -> tuple[int, int] | None:
    return interval if interval[0] <= interval[1] else None


BOUNDS = st.integers(-500, 500)


@given(BOUNDS, st.integers(0, 300), st.integers(1, 60))
def test_fixed_accepted_times_are_every_fitting_time(low: int, span: int, size: int) -> None:
    high = low + span
    got = _accepted(windows.fixed_accepted(size, low, high))
    assert got == _brute(windows.fixed(size), low, high)


@given(BOUNDS, st.integers(0, 300), st.integers(1, 8), st.integers(1, 20), st.integers(0, 19))
def test_sliding_accepted_times_are_every_fitting_time(
    low: int, span: int, periods: int, period: int, extra: int
) -> None:
    high = low + span
    size = periods * period + extra % period  # period <= size, not always a multiple
    got = _accepted(windows.sliding_accepted(size, period, low, high))
    assert got == _brute(windows.sliding(size, period), low, high)


@given(BOUNDS, st.integers(0, 300), st.integers(1, 60))
def test_session_accepted_times_are_every_fitting_time(low: int, span: int, gap: int) -> None:
    high = low + span
    got = _accepted(windows.session_accepted(gap, low, high))
    assert got == _brute(windows.session(gap), low, high)
