"""What every request handler and background thread of one process shares, and the one
place that builds it: ``serve`` and ``worker`` both start from :meth:`AppContext.build`
and :meth:`AppContext.start_services`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.gpu import GpuMonitor
from batch_server.jobs.manager import JobManager
from batch_server.keys import KeyCache
from batch_server.models import prices
from batch_server.models.registry import ModelRegistry
from batch_server.plugins.manager import Plugins
from batch_server.storage import FileStore, make_store
from batch_server.wakeup import Wakeup
from batch_server.webhooks import Dispatcher
from batch_server.worker import Worker


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: FileStore
    # Notified when new work arrives, so workers (here, or on other hosts) start at once.
    wake: Wakeup
    gpu: GpuMonitor
    # The only writer of batch, unit, step and worker state.
    jobs: JobManager
    # API keys as the requests' authentication sees them.
    keys: KeyCache
    # The model registry (database, seeded from the config file).
    models: ModelRegistry
    # The plugins found at start (entry points and plugins_dir), enabled as the DB says.
    plugins: Plugins
    started_at: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        db.migrate()
        wake = Wakeup(db)
        models = ModelRegistry(db, settings)
        models.seed()
        prices.use(prices.from_settings(settings))
        return cls(
            settings=settings,
            db=db,
            store=make_store(settings),
            wake=wake,
            gpu=GpuMonitor(settings),
            jobs=JobManager.from_settings(db, settings, wake),
            keys=KeyCache(db),
            models=models,
            plugins=Plugins(db, settings.plugins_dir).load(),
        )

    def start_services(self, worker: bool, in_thread: bool = True) -> Services:
        """Start the webhook dispatcher and, if ``worker``, a worker: in a thread of its
        own with the default model loaded first (``serve``), or left for the caller to
        run with ``services.worker.run_forever()`` (``batch-server worker``)."""
        services = Services(self, self._worker() if worker else None)
        services.start(in_thread)
        return services

    def _worker(self) -> Worker:
        return Worker(
            self.settings, self.models, self.jobs, self.store, self.gpu, self.wake, self.plugins
        )


class Services:
    """The background parts of one process: the webhook dispatcher and perhaps a worker."""

    def __init__(self, ctx: AppContext, worker: Worker | None) -> None:
        self.ctx = ctx
        self.worker = worker
        self.dispatcher = Dispatcher(ctx.settings, ctx.db)
        self._thread: threading.Thread | None = None

    def start(self, in_thread: bool) -> None:
        self.dispatcher.start()
        if self.worker is None or not in_thread:
            return
        if self.ctx.settings.default_model:
            self.worker.preload(self.ctx.settings.default_model)
        self._thread = threading.Thread(target=self.worker.run_forever, name="worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            if self._thread is not None:
                self._thread.join(timeout=30)
        self.dispatcher.stop()
