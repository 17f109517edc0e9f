"""Waking idle workers the moment work arrives, instead of waiting for their next poll.

One process: a :class:`threading.Event` (an API with an in-process worker on SQLite).
Several processes or hosts on PostgreSQL: ``NOTIFY`` on a channel that every worker
``LISTEN``s to on a dedicated connection. A wake-up is only a hint to look at the queue now;
the worker's poll stays as the fallback, so a lost notification costs one poll interval.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import make_url, text

from batch_server.db.session import Database

log = logging.getLogger(__name__)

CHANNEL = "batch_server_work"

# What one waiting loop (a worker's engine loop, its batch steps) waits on: set by every
# wake-up, cleared by its owner alone.
Waiter = threading.Event


class Wakeup:
    """Wake-ups for the waiting loops of this process (each has its own :data:`Waiter`),
    and :meth:`notify`, which also wakes the workers of other processes when the database
    is PostgreSQL."""

    def __init__(self, db: Database | None = None) -> None:
        self.db = db
        self._waiters: list[Waiter] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None

    @property
    def _shared(self) -> bool:
        return self.db is not None and not self.db.is_sqlite

    # -- in this process ---------------------------------------------------------------

    def waiter(self) -> Waiter:
        """A new waiter, set by every wake-up from now on."""
        waiter = Waiter()
        with self._lock:
            self._waiters.append(waiter)
        return waiter

    def set(self) -> None:
        """Wake every waiter of this process."""
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.set()

    # -- across processes -----------------------------------------------------------------

    def notify(self) -> None:
        """New work (a batch created, cancelled, validated): wake every worker."""
        self.set()
        if not self._shared:
            return
        assert self.db is not None
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
                conn.commit()
        except Exception:  # a lost wake-up only delays the work by one poll
            log.exception("could not send the wake-up notification")

    def listen(self) -> None:
        """Start a thread that sets the local event on every notification (PostgreSQL)."""
        if self._shared and self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="wakeup", daemon=True)
            self._listener.start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(timeout=5)

    def _listen(self) -> None:
        import psycopg

        assert self.db is not None
        dsn = make_url(self.db.url).set(drivername="postgresql")
        while not self._closed.is_set():
            try:
                with psycopg.connect(
                    dsn.render_as_string(hide_password=False), autocommit=True
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.set()  # notifications may have been missed while connecting
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.set()
            except Exception:
                log.warning("wake-up listener lost its connection; reconnecting", exc_info=True)
                self._closed.wait(1.0)
