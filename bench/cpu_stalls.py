"""How steadily this machine runs code: `towerflow bench cpu_stalls`, and a probe other benchmarks
include (bench serve reports it beside its latencies).

Some VMs do not give their vCPUs a steady share of the host: one VM of this workplace ran at ~8-10%
of its normal speed for 40-70 ms roughly every 1.5-2 s, on both vCPUs at once, with no steal time
reported and no gap a spinning loop would see (the loop just ran 10x slower). A tail-latency target
is meaningless there without this figure: a request that meets such a window takes ten times as
long whatever the service does. Two measurements:

- spin: one process per CPU, pinned, counts loop iterations per `window_ms` window. A window under
  half the median count is "slow"; reported are the share of slow windows (per CPU and on all CPUs
  at once), the longest run of slow windows in ms, and the slowest window's speed.
- fixed task: a fixed pure-Python task of ~2 ms, started every 10 ms (100/s, as the serving load),
  timed alone: its p50/p99 is what any request-sized piece of work gets from this machine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StallStats:
    """Slow windows in one or more aligned series of per-window loop counts."""

    windows: int
    window_ms: float
    slow_fraction: float  # mean over CPUs: windows under half that CPU's median speed
    all_slow_fraction: float  # windows slow on every CPU at once
    longest_slow_ms: float  # longest run of consecutive slow windows (any CPU)
    slowest_speed: float  # the slowest window's count / its CPU's median


def stall_stats(series: list[list[int]], window_ms: float) -> StallStats:
    """Stats of aligned per-window iteration counts (one list per CPU).

    Raises:
        ValueError: no series, or series of different lengths.
    """
    if not series or not series[0]:
        raise ValueError("need at least one non-empty series of window counts")
    if len({len(s) for s in series}) != 1:
        raise ValueError(f"series must be aligned; lengths {sorted({len(s) for s in series})}")
    n = len(series[0])
    slow_flags: list[list[bool]] = []
    slowest = float("inf")
    for counts in series:
        median = sorted(counts)[n // 2] or 1
        slow_flags.append([c < 0.5 * median for c in counts])
        slowest = min(slowest, min(counts) / median)
    longest = 0
    for flags in slow_flags:
        run = 0
        for flag in flags:
            run = run + 1 if flag else 0
            longest = max(longest, run)
    all_slow = sum(all(flags[i] for flags in slow_flags) for i in range(n))
    return StallStats(
        windows=n,
        window_ms=window_ms,
        slow_fraction=round(sum(sum(f) for f in slow_flags) / (n * len(series)), 4),
        all_slow_fraction=round(all_slow / n, 4),
        longest_slow_ms=round(longest * window_ms, 1),
        slowest_speed=round(slowest, 3),
    )


def _spin(cpu: int, start: float, seconds: float, window_s: float, out: Any) -> None:
    """Count loop iterations per window from `start` (perf_counter, shared by all CPUs)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    while time.perf_counter() < start:
        pass
    counts: list[int] = []
    count, edge, end = 0, start + window_s, start + seconds
    while True:
        now = time.perf_counter()
        count += 1
        if now >= edge:
            counts.append(count)
            count, edge = 0, edge + window_s
            if now >= end:
                break
    out.put((cpu, counts))


def spin(seconds: float = 8.0, window_ms: float = 5.0) -> StallStats:
    """Spin one pinned process per CPU for `seconds`; stats of their per-window speeds."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.perf_counter() + 2.0  # every process spawned and pinned before counting starts
    procs = [ctx.Process(target=_spin, args=(c, start, seconds, window_ms / 1e3, out)) for c in cpus]
    for proc in procs:
        proc.start()
    results = dict(out.get(timeout=seconds + 60) for _ in procs)
    for proc in procs:
        proc.join()
    n = min(len(c) for c in results.values())
    return stall_stats([results[c][:n] for c in cpus], window_ms)


def _task(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def fixed_task(seconds: float = 10.0, rate: float = 100.0, task_ms: float = 2.0) -> dict[str, float]:
    """Time a fixed ~`task_ms` pure-Python task started `rate` times a second (p50/p99/max ms)."""
    iterations = 1000
    while True:  # calibrate on this machine: the task should take ~task_ms at normal speed
        began = time.perf_counter()
        _task(iterations)
        took = time.perf_counter() - began
        if took >= task_ms / 1e3 / 4:
            iterations = max(1, int(iterations * task_ms / 1e3 / took))
            break
        iterations *= 2
    spent: list[float] = []
    start = time.perf_counter()
    n = 0
    while n < seconds * rate:
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        _task(iterations)
        spent.append((time.perf_counter() - began) * 1e3)
        n += 1
    spent.sort()
    return {
        "p50_ms": round(spent[len(spent) // 2], 2),
        "p99_ms": round(spent[int(len(spent) * 0.99)], 2),
        "max_ms": round(spent[-1], 2),
    }


def probe(spin_seconds: float = 8.0, task_seconds: float = 10.0) -> dict[str, Any]:
    """Both measurements as flat figures (`spin_*`, `task_*`)."""
    figures: dict[str, Any] = {f"spin_{k}": v for k, v in asdict(spin(spin_seconds)).items()}
    figures.update({f"task_{k}": v for k, v in fixed_task(task_seconds).items()})
    return figures


def describe(figures: dict[str, Any]) -> str:
    """One line for people."""
    return (
        f"CPU stalls: {figures['spin_slow_fraction']:.1%} of {figures['spin_window_ms']:g} ms windows under half "
        f"speed ({figures['spin_all_slow_fraction']:.1%} on every CPU at once; longest run "
        f"{figures['spin_longest_slow_ms']:g} ms; slowest window at {figures['spin_slowest_speed']:.0%} speed); "
        f"a fixed 2 ms task at 100/s: p50 {figures['task_p50_ms']:g} ms, p99 {figures['task_p99_ms']:g} ms, "
        f"max {figures['task_max_ms']:g} ms"
    )


def run() -> dict[str, object]:
    from rich.console import Console

    console = Console()
    with console.status("spinning one process per CPU, then a fixed 2 ms task at 100/s"):
        figures = probe()
    console.print(describe(figures), soft_wrap=True)
    return figures
