"""GPU thresholds hold new work; without a GPU monitoring is off and /health says so."""

from __future__ import annotations

import time

from batch_server import gpu
from batch_server.config import Settings
from batch_server.gpu import GpuMonitor, GpuReading, hold_reason
from conftest import Cluster, chat_line, submit, wait_for

GIB = 2**30


def reading(used_gib: float, temp: float, index: int = 0) -> GpuReading:
    return gpu.reading(index, "test", int(used_gib * GIB), 80 * GIB, 50.0, temp)


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


def test_host_memory_threshold_holds_new_work(tmp_path) -> None:
    """Above ``host_max_memory_percent`` the worker claims nothing: the batch waits (and
    can still be cancelled) and /health says why."""
    c = Cluster(tmp_path, {"host_max_memory_percent": 0.1, "poll_seconds": 0.2})
    try:
        batch = submit(c.client, [chat_line("a", "hi"), chat_line("b", "hello")])
        batch = wait_for(c.client, batch.id, ("in_progress",), timeout=30)
        time.sleep(2.0)
        health = c.http.get("/health").json()
        assert health["host"]["hold_reason"].startswith("host memory at ")
        assert health["workers"][0]["state"] == "held", health["workers"]
        waiting = c.client.batches.retrieve(batch.id)
        assert waiting.status == "in_progress" and waiting.request_counts.completed == 0
        c.client.batches.cancel(batch.id)
        done = wait_for(c.client, batch.id, ("cancelled",), timeout=30)
        assert done.request_counts.failed == 2  # batch_cancelled lines, none ran
    finally:
        c.close()
