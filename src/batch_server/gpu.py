"""NVIDIA GPU monitoring through NVML (``nvidia-ml-py``), and the host's memory.

The worker asks :meth:`GpuMonitor.hold_reason` and :func:`host_hold_reason` before it
claims new work: while a GPU is above the memory or temperature threshold, or the host's
memory above its threshold, new work waits instead of crashing the engine. Without NVML
(no ``nvidia-ml-py``, no driver, no GPU) GPU monitoring is off, never holds work, and
``/health`` says why.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TypedDict

import psutil

from batch_server.config import Settings
from batch_server.openai_types.health import GpuReading

__all__ = ["GpuReading", "GpuMonitor", "hold_reason", "host_hold_reason", "host_status", "reading"]

log = logging.getLogger(__name__)


def reading(
    index: int, name: str, used: int, total: int, utilization: float, temperature: float
) -> GpuReading:
    """One GPU's figures (the ``/health`` object is the one type for them)."""
    return GpuReading(
        index=index,
        name=name,
        memory_used_bytes=used,
        memory_total_bytes=total,
        utilization_percent=utilization,
        temperature_c=temperature,
        memory_percent=100.0 * used / total if total else 0.0,
    )


def hold_reason(
    readings: list[GpuReading], max_memory_percent: float, max_temperature_c: float
) -> str | None:
    """Why new work must wait, or ``None``: the first GPU over a threshold."""
    for r in readings:
        if r.memory_percent > max_memory_percent:
            return (
                f"GPU {r.index} memory at {r.memory_percent:.1f}% (limit {max_memory_percent:g}%)"
            )
        if r.temperature_c > max_temperature_c:
            return f"GPU {r.index} at {r.temperature_c:.0f} °C (limit {max_temperature_c:g} °C)"
    return None


class HostStatus(TypedDict):
    memory_percent: float
    max_memory_percent: float
    hold_reason: str | None  # why new work waits, or None


def host_status(max_memory_percent: float, discount_bytes: int = 0) -> HostStatus:
    """The ``host`` part of ``/health``: memory in use (without ``discount_bytes``, the
    memory a worker's own loaded engine holds) and whether it holds new work."""
    vm = psutil.virtual_memory()
    used = round(100.0 * max(0, vm.total - vm.available - discount_bytes) / vm.total, 1)
    reason = (
        f"host memory at {used:.1f}% (limit {max_memory_percent:g}%)"
        if used > max_memory_percent
        else None
    )
    return {"memory_percent": used, "max_memory_percent": max_memory_percent, "hold_reason": reason}


def host_hold_reason(max_memory_percent: float, discount_bytes: int = 0) -> str | None:
    return host_status(max_memory_percent, discount_bytes)["hold_reason"]


class GpuMonitor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._nvml: Any = None
        self.off_reason: str | None = None
        if not settings.gpu_monitoring:
            self.off_reason = "GPU monitoring is disabled (gpu_monitoring = false)"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                raise RuntimeError("NVML reports no GPU")
            self._nvml = pynvml
        except ImportError:
            self.off_reason = "nvidia-ml-py is not installed"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, no GPU …
            self.off_reason = f"no NVIDIA GPU found ({exc})"

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def read(self) -> list[GpuReading]:
        if self._nvml is None:
            return []
        nv = self._nvml
        readings = []
        with self._lock:
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                memory = nv.nvmlDeviceGetMemoryInfo(handle)
                name = nv.nvmlDeviceGetName(handle)
                readings.append(
                    reading(
                        i,
                        name.decode() if isinstance(name, bytes) else str(name),
                        int(memory.used),
                        int(memory.total),
                        float(nv.nvmlDeviceGetUtilizationRates(handle).gpu),
                        float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
                    )
                )
        return readings

    def hold_reason(self) -> str | None:
        if self._nvml is None:
            return None
        try:
            readings = self.read()
        except Exception as exc:  # a GPU that cannot be read is not a reason to stop
            log.warning("could not read GPUs: %s", exc)
            return None
        return hold_reason(
            readings, self.settings.gpu_max_memory_percent, self.settings.gpu_max_temperature_c
        )

    def status(self) -> dict[str, Any]:
        """The ``gpu`` part of ``/health``."""
        if self._nvml is None:
            return {"available": False, "monitoring": "off", "reason": self.off_reason}
        readings = self.read()
        return {
            "available": True,
            "monitoring": "on",
            "thresholds": {
                "max_memory_percent": self.settings.gpu_max_memory_percent,
                "max_temperature_c": self.settings.gpu_max_temperature_c,
            },
            "hold_reason": hold_reason(
                readings, self.settings.gpu_max_memory_percent, self.settings.gpu_max_temperature_c
            ),
            "gpus": [
                r.model_dump() | {"memory_percent": round(r.memory_percent, 1)} for r in readings
            ],
        }
