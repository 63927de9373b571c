"""``edge-rt profile``: measure this machine into a device profile (devices/profile_schema.py).

What is measured, each in a few seconds:
- memory read bandwidth, one thread and all cores: ``numpy.max`` over a uint8 buffer (a SIMD compare that
  keeps up with DRAM; the reduction releases the GIL, so the threads run in parallel), best of passes;
- flash read bandwidth the way the engine streams: O_DIRECT reads of ``_core.IO_CHUNK_BYTES`` (4 MiB) with
  ``_core.IO_THREADS`` (4) in flight, over a 1 GiB file written for the purpose (or ``flash_file``), best
  of two passes (on the 2-core Xeon VM a 256 MiB file read 1.74-1.83 GB/s where 1 GiB read 1.78-2.26 and
  the engine streamed models at a rate 1.17x what the smaller probe predicted); where the filesystem
  refuses O_DIRECT, buffered reads with the page cache dropped behind them (the engine's fallback) and
  the profile says so;
- per-thread matmul throughput of every weight type on every ISA this CPU runs (``_core.kernel_rate``:
  the engine's own kernels on a matrix that stays in L2, decode and prefill paths) and, on the ISA the
  engine runs, the decode rate of one thread streaming a 128 MiB matrix from RAM (``decode_ram``: what
  decode of in-RAM weights runs at per thread, arithmetic and memory traffic overlapped as they are);
- the NPU backends importable here (ONNX Runtime's QNN EP: ``qnn-htp``; its CPU EP: ``cpu-ep``).
  Per-chunk latency needs an exported prefill graph and is left to the NPU stage.
"""

from __future__ import annotations

import datetime as _dt
import mmap
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import psutil

from .cpu import _cpu_model
from .profile_schema import SCHEMA_ID, WEIGHT_TYPES, validate

__all__ = ["measure_profile", "memory_read_bandwidth", "flash_read_bandwidth", "read_pass", "npu_backends"]

Progress = Callable[[str, int, int], None]
MiB = 1 << 20
#: Share of installed RAM a measured profile offers the planner by default (the rest: OS, other apps).
USABLE_RAM_SHARE = 0.75


def _no_progress(stage: str, done: int, total: int) -> None:
    del stage, done, total


def memory_read_bandwidth(threads: int, size: int = 512 * MiB, passes: int = 3) -> float:
    """Best read bandwidth in bytes/s of ``threads`` threads each reducing its slice of a ``size``-byte
    buffer with ``np.max`` (best of ``passes``)."""
    buf = np.ones(size, dtype=np.uint8)  # written: pages resident before timing
    parts = np.array_split(buf, threads)
    best = 0.0
    for _ in range(passes):
        barrier = threading.Barrier(threads + 1)
        ths = [threading.Thread(target=lambda p=p: (barrier.wait(), p.max())) for p in parts]
        for t in ths:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ths:
            t.join()
        best = max(best, size / (time.perf_counter() - t0))
    return best


def read_pass(path: Path, size: int, request: int, depth: int, direct: bool) -> float:
    """One front-to-back pass over ``size`` bytes of ``path`` with ``depth`` reads of ``request`` bytes in
    flight (``depth`` threads taking consecutive requests from a shared cursor, each into its own page-aligned
    buffer), with O_DIRECT or, without it, the page cache dropped as it goes; returns bytes/s."""
    fd = os.open(str(path), os.O_RDONLY | (os.O_DIRECT if direct else 0))
    cursor, lock, errors = [0], threading.Lock(), []  # type: ignore[var-annotated]

    def worker() -> None:
        buf = mmap.mmap(-1, request)  # page aligned, as O_DIRECT needs
        try:
            while True:
                with lock:
                    off = cursor[0]
                    if off >= size:
                        return
                    cursor[0] += request
                n = os.preadv(fd, [buf], off)
                if n <= 0:
                    raise OSError(f"short read at {off} of {path}")
                if not direct:
                    os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
        except BaseException as e:  # surfaced after join
            errors.append(e)
        finally:
            buf.close()

    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        ths = [threading.Thread(target=worker) for _ in range(depth)]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    if errors:
        raise errors[0]
    return size / dt


def flash_read_bandwidth(request: int, depth: int, flash_file: Optional[Path] = None, directory: Optional[Path] = None,
                         size: int = 256 * MiB, passes: int = 2, progress: Progress = _no_progress
                         ) -> Dict[str, Any]:
    """Read bandwidth of the storage at ``request`` bytes per read and ``depth`` reads in flight.

    Reads ``flash_file`` (up to ``size`` bytes of it) or a ``size``-byte file of random bytes written in
    ``directory`` (default: the system temp dir) and deleted afterwards. Returns ``{"bytes_per_s",
    "direct", "bytes_read", "passes", "file"}``; ``direct`` False when the filesystem refused O_DIRECT
    (then buffered reads, the page cache dropped before and behind them)."""
    made: Optional[Path] = None
    chunk = min(16 * MiB, size)
    writes = -(-size // chunk) if flash_file is None else 0  # progress steps: the writes, then the passes
    try:
        if flash_file is None:
            fd, name = tempfile.mkstemp(prefix="edge_rt_flash_", dir=directory)
            made = flash_file = Path(name)
            rng = np.random.default_rng(0)
            with os.fdopen(fd, "wb") as f:
                for i in range(writes):
                    f.write(rng.integers(0, 256, chunk, dtype=np.uint8).tobytes())
                    progress("flash", i + 1, writes + passes)
                f.flush()
                os.fsync(f.fileno())
        size = min(size, flash_file.stat().st_size) // request * request
        if size == 0:
            raise OSError(f"{flash_file} is smaller than one {request}-byte read")
        direct = True
        try:
            os.close(os.open(str(flash_file), os.O_RDONLY | os.O_DIRECT))
        except OSError:
            direct = False
        best = 0.0
        for p in range(passes):
            best = max(best, read_pass(flash_file, size, request, depth, direct))
            progress("flash", writes + p + 1, writes + passes)
        return {"bytes_per_s": best, "direct": direct, "bytes_read": size, "passes": passes,
                "file": None if made else str(flash_file)}
    finally:
        if made is not None:
            made.unlink(missing_ok=True)


def npu_backends() -> Dict[str, Any]:
    """The accelerator backends importable here: ``qnn-htp`` (onnxruntime-qnn's QNN EP), ``cpu-ep`` (ONNX
    Runtime's CPU EP, which stands in for an NPU), ``cuda`` and ``tensorrt`` (its GPU providers), with the
    ONNX Runtime version."""
    backends: List[str] = []
    version = None
    try:
        import onnxruntime as ort

        version = ort.__version__
        providers = ort.get_available_providers()
        if "QNNExecutionProvider" in providers:
            backends.append("qnn-htp")
        if "CPUExecutionProvider" in providers:
            backends.append("cpu-ep")
        if "CUDAExecutionProvider" in providers:
            backends.append("cuda")
        if "TensorrtExecutionProvider" in providers:
            backends.append("tensorrt")
    except Exception:  # ONNX Runtime absent or broken: no backend
        pass
    return {"backends": backends, "onnxruntime": version}


def kernel_rates(wtype: str, isa: str, seconds: float, ram: bool, ram_matrix_bytes: Optional[int] = None
                 ) -> Dict[str, float]:
    """The ``dot`` entry of one weight type and ISA: medians of three runs of ``seconds`` each (on a shared
    machine the median keeps one unlucky or lucky run out) of the in-cache decode and prefill rates, and
    with ``ram`` the decode rate streaming a matrix from RAM (``decode_ram``, one run of 3 x ``seconds``) and,
    for types the engine repacks into groups of 8 rows, that repack's bytes/s on the same matrix (``repack``;
    both then medians of three such runs)."""
    from edge_rt import _core

    runs = [_core.kernel_rate(wtype, isa, seconds) for _ in range(3)]
    out = {"decode": statistics.median(r["decode_per_s"] for r in runs),
           "prefill": statistics.median(r["prefill_per_s"] for r in runs)}
    if ram:
        big = int(ram_matrix_bytes or _core.RATE_RAM_MATRIX_BYTES)
        # One longer run (setting up a matrix this large costs more than timing it); three for the types the
        # engine repacks, whose repack rate moves with the machine's load more than any kernel's.
        runs = [_core.kernel_rate(wtype, isa, 3 * seconds, big)]
        if runs[0]["repack_bytes_per_s"]:
            runs += [_core.kernel_rate(wtype, isa, 3 * seconds, big) for _ in range(2)]
            out["repack"] = statistics.median(r["repack_bytes_per_s"] for r in runs)
        out["decode_ram"] = statistics.median(r["decode_per_s"] for r in runs)
    return out


def _npu_kind(backends: List[str]) -> str:
    if "qnn-htp" in backends:
        return "Qualcomm HTP through ONNX Runtime's QNN EP (on x86, its emulator: not an NPU's speed)"
    if backends:
        return "none: ONNX Runtime's CPU EP stands in for an NPU"
    return "none"


def measure_profile(name: Optional[str] = None, threads: Optional[int] = None, flash_file: Optional[Path] = None,
                    flash_dir: Optional[Path] = None, kernel_seconds: float = 0.05,
                    progress: Progress = _no_progress, memory_bytes: int = 512 * MiB, flash_bytes: int = 1024 * MiB,
                    ram_matrix_bytes: Optional[int] = None) -> Dict[str, Any]:
    """Measure this machine; returns a profile that :func:`validate` accepts (see the module docstring).

    ``threads``: the "all threads" of the bandwidth measurement and the profile's ``cpu.cores`` (default:
    the engine's default thread count). ``flash_file``/``flash_dir``: what flash to measure (default: a
    temporary file in the system temp dir; pass the models' folder to measure the disk they live on).
    ``kernel_seconds``: time per kernel run (three runs per path, type and ISA; the median is kept).
    ``progress(stage, done, total)`` is called as each
    stage advances (stages ``memory``, ``flash``, ``kernels``, ``npu``). ``memory_bytes``, ``flash_bytes``
    and ``ram_matrix_bytes`` (default ``_core.RATE_RAM_MATRIX_BYTES``) size the buffers: smaller is quicker
    and, below the caches' sizes, no longer measures memory or flash.
    """
    from edge_rt import _core
    from edge_rt.loading import default_threads

    n_threads = threads or default_threads()
    progress("memory", 0, 2)
    single = memory_read_bandwidth(1, memory_bytes)
    progress("memory", 1, 2)
    together = memory_read_bandwidth(n_threads, memory_bytes) if n_threads > 1 else single
    progress("memory", 2, 2)

    flash = flash_read_bandwidth(int(_core.IO_CHUNK_BYTES), int(_core.IO_THREADS), flash_file, flash_dir,
                                 size=flash_bytes, progress=progress)

    isas = [i for i in _core.compiled_isas() if _core.cpu_supports(i)]
    dot: Dict[str, Dict[str, Dict[str, float]]] = {}
    total, done = len(isas) * len(WEIGHT_TYPES), 0
    for isa in isas:
        for wtype in WEIGHT_TYPES:
            dot.setdefault(isa, {})[wtype] = kernel_rates(wtype, isa, kernel_seconds, ram=isa == _core.isa(),
                                                          ram_matrix_bytes=ram_matrix_bytes)
            done += 1
            progress("kernels", done, total)

    progress("npu", 0, 1)
    npu = npu_backends()
    progress("npu", 1, 1)
    vm = psutil.virtual_memory()
    estimated: Dict[str, str] = {
        "memory.usable_bytes": f"{USABLE_RAM_SHARE:.0%} of installed RAM, leaving the rest to the OS and other "
                               "programs; pass --mem-budget to plan for another amount",
    }
    if not flash["direct"]:
        estimated["flash.read_bandwidth"] = ("this filesystem refused O_DIRECT: buffered reads with the page cache "
                                             "dropped, as the engine's fallback reads")
    profile: Dict[str, Any] = {
        "schema": SCHEMA_ID,
        "name": name or os.uname().nodename,
        "description": f"measured by edge-rt profile on {_cpu_model()}",
        "origin": "measured",
        "measured_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "estimated": estimated,
        "cpu": {"model": _cpu_model(), "arch": "aarch64" if os.uname().machine in ("aarch64", "arm64") else "x86_64",
                "cores": n_threads, "isa": _core.isa()},
        "memory": {"ram_bytes": int(vm.total), "usable_bytes": int(vm.total * USABLE_RAM_SHARE),
                   "read_bandwidth": {"single_thread": single, "all_threads": together}},
        "flash": {"read_bandwidth": flash["bytes_per_s"], "request_bytes": int(_core.IO_CHUNK_BYTES),
                  "queue_depth": int(_core.IO_THREADS)},
        "dot": dot,
        "npu": {"backends": npu["backends"], "kind": _npu_kind(npu["backends"])},
    }
    return validate(profile)
