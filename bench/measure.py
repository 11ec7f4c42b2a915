"""Timing helpers of the benchmark suite."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    """Latencies of one scenario, in seconds."""

    name: str
    samples: list[float]

    @property
    def per_second(self) -> float:
        """Operations per second (sequential)."""
        return len(self.samples) / sum(self.samples)

    def percentile(self, p: float) -> float:
        """A latency percentile in milliseconds."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def timed(name: str, count: int, operation: Callable[[int], Awaitable[Any]]) -> Result:
    """Run ``operation`` ``count`` times after a warm-up, timing each call."""
    for i in range(max(5, count // 10)):
        await operation(-1 - i)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await operation(i)
        samples.append(time.perf_counter() - started)
    return Result(name, samples)
