"""The machine a benchmark ran on, for its report: CPUs, memory, load, and the versions that set its speed."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


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
