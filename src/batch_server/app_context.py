"""What every request handler and worker thread of one process shares."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from batch_server.config import Settings
from batch_server.db.session import Database
from batch_server.limits import RateLimiter
from batch_server.storage import FileStore


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: FileStore
    # Set when new work arrives, so an in-process worker starts at once.
    wake: threading.Event = field(default_factory=threading.Event)
    started_at: int = field(default_factory=lambda: int(time.time()))
    limiter: RateLimiter = field(default_factory=RateLimiter)

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        db.migrate()
        return cls(settings=settings, db=db, store=FileStore(settings.files_dir))
