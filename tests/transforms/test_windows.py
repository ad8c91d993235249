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
