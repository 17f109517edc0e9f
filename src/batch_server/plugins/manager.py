"""The plugin manager of one process: finds plugins (the ``batch_server`` entry-point group
and the ``plugins_dir`` setting), registers them with pluggy, and calls them one plugin at a
time, so an exception inside one is caught and named (:class:`PluginError`) instead of
failing the request, page, worker or server around it.

Whether a plugin is enabled is read from the ``plugin_states`` table through a snapshot at
most :data:`CACHE_SECONDS` old (as the model registry's), so every API replica and worker
obeys ``POST /v1/admin/plugins/{name}/disable`` within about a second. A plugin that fails
to import is listed with its error and stays disabled."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from sqlalchemy import select

from batch_server.db.session import Database
from batch_server.db.tables import PluginStateRow
from batch_server.plugins import hookspecs
from batch_server.plugins.types import Exporter, Rating, Template

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "batch_server"
CACHE_SECONDS = 1.0
HOOKS = (
    "batch_server_templates",
    "batch_server_parse",
    "batch_server_render",
    "batch_server_exporters",
    "batch_server_ratings",
)


class PluginError(Exception):
    """An exception raised inside a plugin (the message names the plugin), or a template
    that cannot be used (``code`` says why)."""

    def __init__(self, message: str, code: str = "plugin_error") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class PluginInfo:
    """What ``GET /v1/plugins`` lists of one plugin."""

    name: str
    source: str  # entry_point | plugins_dir
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed to load (then it is disabled), or a hook failed
    loaded: bool = True
    templates: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)
    ratings: list[str] = field(default_factory=list)


class Plugins:
    """The plugins of one process, loaded once (:meth:`load`)."""

    def __init__(self, db: Database, plugins_dir: Path | None, entry_points: bool = True) -> None:
        self.db = db
        self.plugins_dir = plugins_dir
        self.entry_points = entry_points
        self.pm = pluggy.PluginManager("batch_server")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.templates: dict[str, tuple[str, Template]] = {}  # name → (plugin, template)
        self.exporters: dict[str, tuple[str, Exporter]] = {}
        self.ratings: list[tuple[str, Rating]] = []
        self._lock = threading.Lock()
        self._states: dict[str, bool] = {}
        self._read_at = -CACHE_SECONDS

    # -- loading --------------------------------------------------------------------------

    def load(self) -> Plugins:
        global _loaded
        _loaded = self
        if self.entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                version = ep.dist.version if ep.dist is not None else None
                info = PluginInfo(ep.name, "entry_point", version)
                self._add(info, ep.load)
        if self.plugins_dir is not None and self.plugins_dir.is_dir():
            for path in sorted(self.plugins_dir.iterdir()):
                name = path.stem
                if name.startswith(("_", ".")) or not (
                    path.suffix == ".py" or (path / "__init__.py").is_file()
                ):
                    continue
                info = PluginInfo(name, "plugins_dir")
                self._add(info, lambda p=path, n=name: _import_path(n, p))
        return self

    def _add(self, info: PluginInfo, load: Any) -> None:
        if info.name in self.infos:
            log.warning("plugin %s found twice; the second is ignored", info.name)
            return
        self.infos[info.name] = info
        try:
            module: ModuleType = load()
            info.version = info.version or getattr(module, "__version__", None)
            self.pm.register(module, name=info.name)
            try:
                self.pm.check_pending()  # a hook of ours misspelt, say
            except Exception:
                self.pm.unregister(name=info.name)
                raise
        except (Exception, SystemExit) as exc:
            info.loaded = False
            info.error = f"failed to load: {type(exc).__name__}: {exc}"[:2000]
            log.warning("plugin %s %s", info.name, info.error)
            return
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(module) or [])
        self._collect(info)

    def _collect(self, info: PluginInfo) -> None:
        """The plugin's templates, exporters and ratings (each asked for once)."""
        name = info.name
        for hook, kind in (
            ("batch_server_templates", Template),
            ("batch_server_exporters", Exporter),
            ("batch_server_ratings", Rating),
        ):
            try:
                returned = self.call(name, hook) or []
                if not isinstance(returned, list | tuple):
                    raise PluginError(f"plugin {name}: {hook} returned no list")
                items = list(returned)
                for item in items:
                    if not isinstance(item, kind):
                        raise PluginError(f"plugin {name}: {hook} returned a {type(item)!r}")
            except PluginError as exc:
                info.error = str(exc)
                continue
            for item in items:
                if isinstance(item, Template):
                    if item.name in self.templates:
                        info.error = f"template {item.name!r} is offered by another plugin"
                        continue
                    self.templates[item.name] = (name, item)
                    info.templates.append(item.name)
                elif isinstance(item, Exporter):
                    if item.name in self.exporters:
                        info.error = f"exporter {item.name!r} is offered by another plugin"
                        continue
                    self.exporters[item.name] = (name, item)
                    info.exporters.append(item.name)
                elif isinstance(item, Rating):
                    self.ratings.append((name, item))
                    info.ratings.append(item.name)

    # -- enabled or not -------------------------------------------------------------------

    def states(self) -> dict[str, bool]:
        """The switched plugins (name → enabled), as of at most :data:`CACHE_SECONDS` ago."""
        if time.monotonic() - self._read_at < CACHE_SECONDS:
            return self._states
        with self.db.read() as s:
            rows = s.execute(select(PluginStateRow.name, PluginStateRow.enabled)).all()
        with self._lock:
            self._states, self._read_at = {n: bool(e) for n, e in rows}, time.monotonic()
        return self._states

    def refresh(self) -> None:
        """Read the states again at the next look (after this process changed one)."""
        self._read_at = -CACHE_SECONDS

    def enabled(self, name: str) -> bool:
        info = self.infos.get(name)
        return info is not None and info.loaded and self.states().get(name, True)

    # -- calling one plugin ---------------------------------------------------------------

    def call(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """The result of ``plugin``'s implementation of ``hook`` (``None`` without one);
        any exception inside it comes out as :class:`PluginError` naming the plugin."""
        caller = getattr(self.pm.hook, hook)
        impl = next((i for i in caller.get_hookimpls() if i.plugin_name == plugin), None)
        if impl is None:
            return None
        try:
            return impl.function(*(kwargs[a] for a in impl.argnames))
        except Exception as exc:
            raise PluginError(f"plugin {plugin}: {hook}: {type(exc).__name__}: {exc}") from exc

    def template(self, name: str) -> tuple[str, Template]:
        """The template ``name`` and its plugin, if it can be used now; else
        :class:`PluginError` with code ``template_not_found`` or ``template_disabled``."""
        found = self.templates.get(name)
        if found is None:
            raise PluginError(
                f"template '{name}' is not offered by any plugin (see GET /v1/plugins)",
                "template_not_found",
            )
        if not self.enabled(found[0]):
            raise PluginError(
                f"template '{name}' belongs to plugin '{found[0]}', which is disabled",
                "template_disabled",
            )
        return found

    def exporter(self, name: str) -> tuple[str, Exporter] | None:
        found = self.exporters.get(name)
        return found if found is not None and self.enabled(found[0]) else None

    def enabled_ratings(self, template: str) -> list[tuple[str, Rating]]:
        return [
            (p, r)
            for p, r in self.ratings
            if self.enabled(p) and (not r.templates or template in r.templates)
        ]

    def info(self) -> list[tuple[PluginInfo, bool]]:
        """Every plugin found, with whether it is enabled now."""
        return [(i, self.enabled(i.name)) for i in self.infos.values()]


_loaded: Plugins | None = None


def loaded() -> Plugins | None:
    """The plugins this process loaded (its app context's), for readers of stored requests
    deep below the API (curation) that rebuild a templated line's body; None before."""
    return _loaded


def _import_path(name: str, path: Path) -> ModuleType:
    """Import a module (``x.py``) or package (``x/__init__.py``) of the plugins directory."""
    module_name = f"batch_server_plugin_{name}"
    init = path / "__init__.py" if path.is_dir() else path
    locations = [str(path)] if path.is_dir() else None
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=locations
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
