"""GPU thresholds hold new work; without a GPU monitoring is off and /health says so."""

from __future__ import annotations

from batch_server.config import Settings
from batch_server.gpu import GpuMonitor, GpuReading, hold_reason
from conftest import Cluster

GIB = 2**30


def reading(used_gib: float, temp: float, index: int = 0) -> GpuReading:
    return GpuReading(index, "test", int(used_gib * GIB), 80 * GIB, 50.0, temp)


def test_thresholds() -> None:
    assert hold_reason([reading(40, 60)], 95, 85) is None
    assert hold_reason([reading(79, 60)], 95, 85) == "GPU 0 memory at 98.8% (limit 95%)"
    assert hold_reason([reading(10, 60), reading(10, 90, 1)], 95, 85) == (
        "GPU 1 at 90 °C (limit 85 °C)"
    )
    assert hold_reason([], 95, 85) is None


def test_monitoring_off_without_gpu(tmp_path) -> None:
    off = GpuMonitor(Settings(data_dir=tmp_path, gpu_monitoring=False))
    assert not off.available and off.hold_reason() is None
    assert off.status()["reason"] == "GPU monitoring is disabled (gpu_monitoring = false)"
    here = GpuMonitor(Settings(data_dir=tmp_path))
    if not here.available:  # this machine has no NVIDIA GPU
        assert here.hold_reason() is None
        assert here.status()["monitoring"] == "off" and here.status()["reason"]


def test_health_reports_gpu_state(cluster: Cluster) -> None:
    gpu = cluster.http.get("/health").json()["gpu"]
    assert set(gpu) >= {"available", "monitoring"}
    if not gpu["available"]:
        assert gpu["monitoring"] == "off" and gpu["reason"]
