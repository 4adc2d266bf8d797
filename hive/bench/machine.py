"""The machine a benchmark ran on, for its report: CPUs, memory, load, and the versions that set its speed."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

# 2048 x 2048 fp32: large enough that torch.mm runs at its peak on a CPU (FACTS: about 197 GFLOP/s on 2 threads
# here), small enough (48 MB, under 0.1 s a run) that measuring it adds about a second to a bench.
PEAK_MATMUL_SIZE = 2048
PEAK_MATMUL_WARMUP = 3
PEAK_MATMUL_REPEATS = 7


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_1m() -> float | None:
    """The 1-minute load average: the machine is shared, and a busy one slows threaded arms most."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    try:
        memory_gb: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "deepspeed": package_version("deepspeed"),
        "transformers": package_version("transformers"),
    }


def matmul_flops(size: int) -> int:
    """Floating-point operations of one ``size`` x ``size`` by ``size`` x ``size`` matmul: a multiply and an add
    for each of ``size`` terms of each of ``size``² outputs."""
    return 2 * size**3


def peak_matmul(
    threads: int,
    size: int = PEAK_MATMUL_SIZE,
    warmup: int = PEAK_MATMUL_WARMUP,
    repeats: int = PEAK_MATMUL_REPEATS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """This CPU's peak matmul rate with ``threads`` torch threads: fp32 ``torch.mm`` of two ``size``-square
    matrices, ``warmup`` untimed runs, then the median FLOP/s of ``repeats`` timed ones.

    It is the ceiling to hold training against: a training step is mostly matmuls, so its FLOP/s over this
    one says how far from the physical limit it runs. The median, as a machine shared with other work slows
    some runs; torch's thread count is restored afterwards.
    """
    if threads < 1 or size < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            f"threads, size and repeats must be positive and warmup not negative: {threads=}, "
            f"{size=}, {warmup=}, {repeats=}"
        )
    # Imported here: the ingest bench reads this module's machine info and has no use for torch.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        out = torch.empty(size, size)
        for _ in range(warmup):
            torch.mm(a, b, out=out)
        seconds = []
        for _ in range(repeats):
            started = clock()
            torch.mm(a, b, out=out)
            seconds.append(clock() - started)
    finally:
        torch.set_num_threads(previous)
    median_s = statistics.median(seconds)
    return {
        "threads": threads,
        "dtype": "float32",
        "size": size,
        "warmup": warmup,
        "repeats": repeats,
        "median_s": median_s,
        "flops_per_s": matmul_flops(size) / median_s,
        "load_1m": load_1m(),
    }
