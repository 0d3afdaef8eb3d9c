"""Helpers shared by the benchmark suites: repetitions, peak memory, and the result-row format.

A suite is a module ``benchmarks/suites/<name>.py`` with ``run(quick: bool) -> dict`` returning::

    {"suite": name, "inputs": {...}, "rows": [row(...), ...], "notes": [str, ...]}

``benchmarks/run.py`` adds machine and versions, medians, spreads and ratios, writes
``benchmarks/results/<name>.json`` and prints the table.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("RAGCUN_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")


def timed(fn: Callable[[], Any], reps: int = 3, warmup: int = 0) -> tuple[list[float], Any]:
    """Run ``fn`` ``warmup`` + ``reps`` times; return the wall seconds of the timed runs and the last
    result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def peak_rss(fn: Callable[[], Any], interval: float = 0.02) -> tuple[Any, int]:
    """Run ``fn`` and return (result, peak resident memory in bytes of this process while it ran)."""
    import psutil

    proc = psutil.Process()
    peak = proc.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        result = fn()
    finally:
        stop.set()
        th.join()
    peak = max(peak, proc.memory_info().rss)
    return result, peak


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def row(
    task: str,
    metric: str,
    ragcun_name: str,
    ragcun_values: list[float],
    reference_name: str | None = None,
    reference_values: list[float] | None = None,
    higher_is_better: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One comparison: ragcun's repetitions vs the reference's on the same task and metric."""
    r: dict[str, Any] = {
        "task": task,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "ragcun": {"name": ragcun_name, "values": list(ragcun_values), **summary(ragcun_values)},
    }
    if reference_values:
        r["reference"] = {"name": reference_name, "values": list(reference_values),
                          **summary(reference_values)}
        ref = r["reference"]["median"]
        r["ratio"] = r["ragcun"]["median"] / ref if ref else None
    if extra:
        r["extra"] = extra
    return r


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    from ragcun.runtime import cpu_info  # which CPU: its vector units decide what bf16 and int8 can gain

    model, flags = cpu_info()
    info["cpu_model"] = model
    info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                        "amx_bf16", "amx_int8", "avx512_fp16"})
    if hasattr(os, "getloadavg"):  # 1/5/15-minute load when the suite ended: above the thread count = shared
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    versions = {}
    for dist in ("ragcun", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s",
                 "rank-bm25", "beir", "pytrec-eval-terrier", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    return info
