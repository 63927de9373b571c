"""The local CPU as the engine sees it."""

from __future__ import annotations

import platform
from typing import Any

import psutil


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> dict[str, Any]:
    """Cores, memory and the kernel ISA chosen at run time (``EDGE_RT_ISA`` can lower it)."""
    from edge_rt import _core

    vm = psutil.virtual_memory()
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False) or 1,
        "logical_cores": psutil.cpu_count(logical=True) or 1,
        "ram_total_bytes": int(vm.total),
        "isa": _core.isa(),
        "best_isa": _core.best_isa(),
        "compiled_isas": list(_core.compiled_isas()),
    }
