from datetime import UTC, datetime, timedelta, timezone

import pytest

from mes.clock import FixedClock, SystemClock


def test_system_clock_is_aware_utc():
    assert SystemClock().now().tzinfo is UTC


def test_fixed_clock_normalises_to_utc_and_only_moves_forward():
    clock = FixedClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1))))
    assert clock.now() == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert clock.advance(timedelta(minutes=5)) == datetime(2026, 3, 1, 11, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))


def test_fixed_clock_refuses_naive_start():
    with pytest.raises(ValueError, match="timezone-aware"):
        FixedClock(datetime(2026, 3, 1))
