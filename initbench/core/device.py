"""Devices, seeding, determinism and GPU memory limits (the tutorial's section 3)."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

from initbench.core.errors import UsageError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} asked for, but torch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {spec!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' asked for, but it is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def describe_device(device: torch.device) -> str:
    """The device in words, for messages: ``cpu (2 threads)``, ``cuda (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels for every seed (cudnn.deterministic, no benchmark autotuning)."""
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)


def use_full_float32() -> None:
    """Full float32 matmuls and convolutions (no TF32), so GPU numbers match the CPU's."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def limit_gpu_memory(fraction: float, device: torch.device) -> None:
    """Caps this process's share of the GPU's memory (``set_per_process_memory_fraction``)."""
    if not 0 < fraction <= 1:
        raise UsageError(f"--gpu-memory-fraction must be in (0, 1], got {fraction:g}")
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        torch.cuda.empty_cache()


def prepare_process(deterministic: bool) -> None:
    """What every process computing runs sets first: determinism, full float32 matmuls
    and convolutions, and a malloc that keeps freed blocks."""
    set_deterministic(deterministic)
    use_full_float32()
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to reuse freed blocks rather than return them to the system.

    A stacked chunk allocates and frees tensors of a few MiB for every layer. By default
    glibc serves those with fresh ``mmap`` pages (or trims them off the heap), so every
    layer pays page faults on first touch; on a 2-core CPU that costs a fifth of a probe.
    Keeping up to 1 GiB of freed memory (and serving blocks up to 32 MiB from the heap)
    removes that cost. A no-op where the C library is not glibc; returns whether it applied.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20)
    )


def resolve_rng(rng: str, device: torch.device) -> str:
    """``auto`` is ``device`` on GPUs and ``host`` elsewhere."""
    if rng not in ("auto", "host", "device"):
        raise UsageError(f"unknown rng {rng!r}; choose from auto, host, device")
    if rng == "auto":
        return "device" if device.type == "cuda" else "host"
    return rng


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA (or host) out-of-memory error."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def free_memory(device: torch.device) -> None:
    """Returns cached GPU blocks to the driver after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict[str, object]:
    """Device name and versions for ``meta.json``."""
    info: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["total_memory"] = torch.cuda.get_device_properties(device).total_memory
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info
