"""Enabling and disabling plugins: the only writer of the ``plugin_states`` table. Every
process reads it through :meth:`~batch_server.plugins.manager.Plugins.states`."""

from __future__ import annotations

import time

from batch_server.db.session import Database
from batch_server.db.tables import PluginStateRow


def set_enabled(db: Database, name: str, enabled: bool) -> None:
    """Switch plugin ``name`` on or off for every worker and API replica."""
    with db.write() as s:
        row = s.get(PluginStateRow, name)
        if row is None:
            s.add(PluginStateRow(name=name, enabled=enabled, updated_at=time.time()))
        else:
            row.enabled, row.updated_at = enabled, time.time()
