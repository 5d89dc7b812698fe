"""Timing helpers shared by the benchmarks: warm-up, repeats, medians, ratios, a table, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measurement:
    name: str
    seconds: list[float]
    work: float  # units of work per call (images, samples)
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.work / self.median


def measure(
    name: str, fn: Callable[[], object], work: float, unit: str, repeats: int = 5, warmup: int = 1
) -> Measurement:
    """Call `fn` `warmup` times untimed, then `repeats` times timed."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Measurement(name, seconds, work, unit)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(title: str, rows: list[Measurement], reference: str, path: str) -> None:
    """Print a table with rates and ratios to `reference`, and write the JSON beside it."""
    base = next(r for r in rows if r.name == reference).rate
    print(f"\n{title}")
    print(f"{'':42s} {'median s':>9s} {'rate':>14s} {'vs ref':>7s}")
    for row in rows:
        rate = f"{row.rate:,.0f} {row.unit}/s"
        print(f"{row.name:42s} {row.median:9.3f} {rate:>14s} {row.rate / base:6.2f}x")
    write_results(
        path,
        {
            "title": title,
            "reference": reference,
            "rows": [
                {**asdict(r), "median": r.median, "rate": r.rate, "ratio": r.rate / base}
                for r in rows
            ],
        },
    )


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write a benchmark's figures, with the machine they were measured on, to
    `bench/results/<name>` and say where."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / name
    out.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    print(f"(written to {out})")
    return out
