"""What every request handler and worker thread of one process shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.gpu import GpuMonitor
from batch_server.storage import FileStore, make_store
from batch_server.wakeup import Wakeup


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: FileStore
    # Notified when new work arrives, so workers (here, or on other hosts) start at once.
    wake: Wakeup
    started_at: int = field(default_factory=lambda: int(time.time()))
    gpu: GpuMonitor | None = None

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        db.migrate()
        return cls(
            settings=settings,
            db=db,
            store=make_store(settings),
            wake=Wakeup(db),
            gpu=GpuMonitor(settings),
        )
