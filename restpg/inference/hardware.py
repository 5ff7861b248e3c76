"""Precision and threads, chosen from the hardware.

bf16 is the paper's precision and the default on CUDA. On a CPU it is only fast where the CPU
multiplies bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flags): elsewhere torch runs bf16
matrix products through a slow fallback (measured on a 2-core AVX2 EPYC: 3.1 GFLOP/s against 104
in fp32), and a training step takes minutes instead of seconds. So ``auto`` on a CPU picks bf16
only where the flags are there *and* a short matmul measurement at the model's shapes says it is
faster; fp32 otherwise. Training, sampling, the teacher and the judge all ask this one function.

Threads: torch uses one thread per core by default. A background job on a CPU shares the cores
with the app's live generation: :func:`job_threads` and :func:`page_threads` split them (measured
by bench/demo_bench.py: page tokens/s with and without a job).
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RestpgError

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
DEVICE_HELP = "auto (CUDA where there is one), cpu, cuda, cuda:N"
DTYPE_HELP = (
    "auto (bf16 on CUDA; on a CPU bf16 only where it is native and measures faster, else float32), "
    "float32, bfloat16, float16"
)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_MIN_SPEEDUP = 1.15  # bf16 must beat fp32 by this much on a CPU to be worth its lost precision


class PrecisionError(RestpgError, ValueError):
    """An unknown dtype name, or a precision the device cannot run."""


@dataclass(frozen=True)
class Precision:
    """The dtype a model runs in and why it was chosen (printed by the CLI, the app and the benchmark)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(flags: frozenset[str]) -> bool:
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def matmul_gflops(
    dtype: torch.dtype, rows: int = 512, inner: int = 576, cols: int = 1536, seconds: float = 0.15
) -> float:
    """GFLOP/s of a (rows x inner) @ (inner x cols) product in ``dtype`` on the CPU.

    The default shape is SmolLM2-135M's MLP projection for a 512-token batch.
    """
    a = torch.randn(rows, inner).to(dtype)
    b = torch.randn(inner, cols).to(dtype)
    torch.matmul(a, b)  # warm-up
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 2:
        torch.matmul(a, b)
        runs += 1
    return 2 * rows * inner * cols * runs / elapsed / 1e9


@functools.cache
def _cpu_bf16_speedup(threads: int) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s on this CPU with ``threads`` threads; measured once per process."""
    return matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)


def choose_precision(
    requested: str, device: torch.device, flags: frozenset[str] | None = None, measure=None
) -> Precision:
    """The dtype for ``requested`` ("auto" or a name in DTYPES) on ``device``, with the reason.

    ``flags`` and ``measure`` (a function returning fp32 and bf16 GFLOP/s) are for tests; by default
    the CPU's own flags and a measurement of this process's threads are used.
    """
    if requested != "auto":
        if requested not in DTYPES:
            raise PrecisionError(f"unknown dtype {requested!r}; use auto, {', '.join(DTYPES)}")
        reason = "asked for"
        if device.type == "cpu" and requested == "bfloat16":
            flags = cpu_flags() if flags is None else flags
            if not native_bf16(flags):
                reason += (
                    " (warning: this CPU has no native bf16, torch falls back to a slow path; "
                    "float32 is many times faster here)"
                )
        return Precision(DTYPES[requested], reason)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "CUDA with bf16 support (the paper's precision)")
        return Precision(torch.float16, "CUDA without bf16 support")
    if device.type != "cpu":
        return Precision(torch.float32, f"{device.type}: float32")
    flags = cpu_flags() if flags is None else flags
    if not native_bf16(flags):
        return Precision(
            torch.float32,
            "CPU without native bf16 (no avx512_bf16 / amx_bf16 flag): bf16 would run through torch's slow fallback",
        )
    fp32, bf16 = (measure or (lambda: _cpu_bf16_speedup(torch.get_num_threads())))()
    if bf16 >= BF16_MIN_SPEEDUP * fp32:
        return Precision(
            torch.bfloat16, f"CPU with native bf16, measured faster: {bf16:.0f} vs {fp32:.0f} GFLOP/s in fp32"
        )
    return Precision(
        torch.float32, f"CPU with native bf16, but not measured faster: {bf16:.0f} vs {fp32:.0f} GFLOP/s in fp32"
    )


def pick_device(device: str) -> torch.device:
    """``auto``: CUDA where there is one, else the CPU. Under ``accelerate launch`` (LOCAL_RANK set),
    "auto" and a bare "cuda" mean this process's own GPU, cuda:LOCAL_RANK, not every rank on GPU 0."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrecisionError(f"device {device!r} asked for, but CUDA is not available here")
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{int(local_rank)}"
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise PrecisionError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from error


# ----------------------------------------------------------------------------------------------
# Threads


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def job_threads(cores: int | None = None) -> int:
    """Threads for a background training job on a CPU: every core. The job runs at a lower priority
    (restpg.app.jobs.CPU_JOB_NICENESS), so the page's generation takes the cores it uses first."""
    return cpu_count() if cores is None else cores


def page_threads(job_running: bool, cores: int | None = None) -> int:
    """Threads for the app's live generation: every core, or a quarter of them (at least one) while a
    CPU job runs, so that the two share the cores instead of both asking for all of them."""
    cores = cpu_count() if cores is None else cores
    return max(1, cores // 4) if job_running else cores


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (None: leave torch's default); returns the number in use."""
    if threads is not None:
        if threads < 1:
            raise PrecisionError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------------
# Memory


def reset_peak_memory() -> None:
    """Starts a new peak of this process's memory: resident (Linux, /proc/self/clear_refs) and, when
    CUDA is in use, allocated on the GPU. Where the resident peak cannot be reset, it stays the
    process's peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib() -> dict[str, float]:
    """Peak memory since :func:`reset_peak_memory`, in MiB: ``resident`` (the process's peak resident
    set; on other systems than Linux its peak since it started) and ``cuda`` where CUDA is in use."""
    try:
        status = Path("/proc/self/status").read_text()
        resident = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS
    peak = {"resident": round(resident, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak
