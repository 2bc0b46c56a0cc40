"""Did the host sleep? ``CLOCK_BOOTTIME`` counts time suspended, ``CLOCK_MONOTONIC`` does
not: when their difference grows, the host was asleep for that long. No D-Bus, no logind, no
polling of wall-clock time (which NTP and the user may change)."""

from __future__ import annotations

import time
from collections.abc import Callable

_Clock = Callable[[], float]


def _suspended_s(boottime: _Clock, monotonic: _Clock) -> float:
    return boottime() - monotonic()


class SleepWatch:
    """Call ``check()`` now and then (say every few seconds): it returns how long the host
    slept since the last call (0.0 if it did not, or for less than ``threshold_s``)."""

    def __init__(self, threshold_s: float = 2.0, *,
                 boottime: _Clock = lambda: time.clock_gettime(time.CLOCK_BOOTTIME),
                 monotonic: _Clock = time.monotonic) -> None:
        self.threshold_s = threshold_s
        self._boottime, self._monotonic = boottime, monotonic
        self._last = _suspended_s(boottime, monotonic)

    def check(self) -> float:
        now = _suspended_s(self._boottime, self._monotonic)
        slept, self._last = now - self._last, now
        return slept if slept >= self.threshold_s else 0.0
