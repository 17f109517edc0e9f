"""The model registry at run time. It lives in the ``models`` table: the config file's
models are written there at every start (origin "config": the file is authoritative for
them, and the admin API refuses to change them), models added over the admin API have
origin "api", models made by a fine-tuning job origin "fine_tune". Every process reads
it through :class:`ModelRegistry`, whose snapshot is at most :data:`CACHE_SECONDS` old,
so a change reaches every worker and API replica without a restart. This module is the
only writer of the ``models`` table."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update

from batch_server.config import ModelSpec, Settings
from batch_server.db.session import Database, rowcount
from batch_server.db.tables import BatchRow, ModelRow, WorkUnitRow
from batch_server.statuses import LIVE, BatchStatus

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0

ORIGIN_CONFIG = "config"
ORIGIN_API = "api"
ORIGIN_FINE_TUNE = "fine_tune"  # made by a fine-tuning job (batch_server.fine_tuning)


@dataclass(frozen=True)
class ModelState:
    """A model's registry entry beside its spec: where it came from and whether it loads."""

    origin: str
    created_at: int
    updated_at: float
    status: str  # untested | testing | ready | failed
    status_reason: str | None


@dataclass(frozen=True)
class Registry:
    """A snapshot of the registry: what one request or one work step decides on."""

    specs: dict[str, ModelSpec]
    states: dict[str, ModelState] = field(default_factory=dict)
    default_unit_size: int = 64

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.specs

    def get(self, model_id: str) -> ModelSpec | None:
        return self.specs.get(model_id)

    def state(self, model_id: str) -> ModelState | None:
        return self.states.get(model_id)

    def resolve(self, name: str) -> str | None:
        """The registry id of a model id or alias."""
        return self.aliases().get(name)

    def aliases(self) -> dict[str, str]:
        """Every accepted model name (ids and aliases) mapped to its registry id."""
        names: dict[str, str] = {}
        for model_id, spec in self.specs.items():
            names[model_id] = model_id
            for alias in spec.aliases:
                names.setdefault(alias, model_id)
        return names

    def endpoints(self) -> dict[str, frozenset[str]]:
        """The batch endpoints of each model that declares them."""
        return {m: frozenset(spec.endpoints) for m, spec in self.specs.items() if spec.endpoints}

    def unit_size_for(self, model_id: str) -> int:
        spec = self.specs.get(model_id)
        return (spec.unit_size if spec else None) or self.default_unit_size

    def unit_sizes(self) -> dict[str, int]:
        return {m: self.unit_size_for(m) for m in self.specs}

    def unavailable(self) -> dict[str, str]:
        """Models whose latest test load failed, with the reason: no batch may use them."""
        return {
            m: s.status_reason or "its test load failed"
            for m, s in self.states.items()
            if s.status == "failed"
        }


class ModelInUse(Exception):
    """The model is used by a batch that has not ended (or may be: a batch is still
    validating, and its lines may name it)."""


class ConfigModel(Exception):
    """The model is defined in the config file, which is authoritative for it."""


class ModelRegistry:
    """The registry of one process: seeded from the config, read through a short cache,
    changed by the admin API."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._lock = threading.Lock()
        self._snapshot: Registry | None = None
        self._read_at = 0.0

    # -- reading ---------------------------------------------------------------------

    def current(self) -> Registry:
        """The registry as of at most :data:`CACHE_SECONDS` ago."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._read_at < CACHE_SECONDS:
            return snapshot
        return self.refresh()

    def refresh(self) -> Registry:
        with self.db.read() as s:
            rows = list(s.execute(select(ModelRow)).scalars())
        # the config file's models in its order, then the others as they were added
        position = {model_id: i for i, model_id in enumerate(self.settings.models)}
        rows.sort(key=lambda r: (position.get(r.id, len(position)), r.created_at, r.id))
        specs: dict[str, ModelSpec] = {}
        states: dict[str, ModelState] = {}
        for row in rows:
            try:
                specs[row.id] = ModelSpec.model_validate(row.spec)
            except ValidationError as exc:  # written by another version: leave it out
                log.warning("model %s in the registry is not valid here: %s", row.id, exc)
                continue
            states[row.id] = ModelState(
                row.origin, row.created_at, row.updated_at, row.status, row.status_reason
            )
        snapshot = Registry(specs, states, self.settings.unit_size)
        with self._lock:
            self._snapshot, self._read_at = snapshot, time.monotonic()
        return snapshot

    # -- writing ---------------------------------------------------------------------

    def seed(self) -> None:
        """Write the config file's models (origin "config"); an entry the config changed
        is replaced and its test status reset."""
        now = time.time()
        with self.db.write() as s:
            existing = {r.id: r for r in s.execute(select(ModelRow)).scalars()}
            for model_id, spec in self.settings.models.items():
                data = _dump(spec)
                row = existing.get(model_id)
                if row is None:
                    s.add(
                        ModelRow(
                            id=model_id,
                            spec=data,
                            origin=ORIGIN_CONFIG,
                            created_at=int(now),
                            updated_at=now,
                            status="untested",
                        )
                    )
                elif row.spec != data or row.origin != ORIGIN_CONFIG:
                    row.spec, row.origin, row.updated_at = data, ORIGIN_CONFIG, now
                    row.status, row.status_reason = "untested", None
        self.refresh()

    def add(self, model_id: str, spec: ModelSpec) -> None:
        """Add a model (origin "api"); :class:`KeyError` when the id is taken."""
        now = time.time()
        with self.db.write() as s:
            if s.get(ModelRow, model_id) is not None:
                raise KeyError(model_id)
            s.add(
                ModelRow(
                    id=model_id,
                    spec=_dump(spec),
                    origin=ORIGIN_API,
                    created_at=int(now),
                    updated_at=now,
                    status="untested",
                )
            )
        self.refresh()

    def add_fine_tuned(self, model_id: str, spec: ModelSpec) -> None:
        """Register the model a fine-tuning job made (origin "fine_tune"); written again
        by a job that is finished a second time after a crash, it replaces the first."""
        now = time.time()
        with self.db.write() as s:
            row = s.get(ModelRow, model_id)
            if row is not None and row.origin != ORIGIN_FINE_TUNE:
                raise KeyError(model_id)
            if row is None:
                row = ModelRow(id=model_id, origin=ORIGIN_FINE_TUNE, created_at=int(now))
                s.add(row)
            row.spec, row.updated_at, row.status, row.status_reason = (
                _dump(spec),
                now,
                "untested",
                None,
            )
        self.refresh()

    def update(self, model_id: str, changes: dict[str, Any]) -> ModelSpec:
        """Apply ``changes`` (ModelSpec fields) to an API-added model; its test status is
        reset. Raises :class:`KeyError`, :class:`ConfigModel` or pydantic's error."""
        with self.db.write() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise KeyError(model_id)
            if row.origin == ORIGIN_CONFIG:
                raise ConfigModel(model_id)
            spec = ModelSpec.model_validate({**row.spec, **changes})
            row.spec, row.updated_at = _dump(spec), time.time()
            row.status, row.status_reason = "untested", None
        self.refresh()
        return spec

    def remove(self, model_id: str) -> None:
        """Remove an API-added model that no live batch uses. Raises :class:`KeyError`,
        :class:`ConfigModel` or :class:`ModelInUse`."""
        with self.db.write() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise KeyError(model_id)
            if row.origin == ORIGIN_CONFIG:
                raise ConfigModel(model_id)
            if _in_use(s, model_id, row.spec):
                raise ModelInUse(model_id)
            s.execute(delete(ModelRow).where(ModelRow.id == model_id))
        self.refresh()

    def set_status(self, model_id: str, status: str, reason: str | None = None) -> None:
        """Record a model's test status (see :mod:`batch_server.models.tests`)."""
        with self.db.write() as s:
            rowcount(
                s.execute(
                    update(ModelRow)
                    .where(ModelRow.id == model_id)
                    .values(status=status, status_reason=reason)
                )
            )
        self.refresh()


def _dump(spec: ModelSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_defaults=True)


def _in_use(s: Any, model_id: str, spec: dict[str, Any]) -> bool:
    names: Iterable[str] = [model_id, *spec.get("aliases", [])]
    live = [str(x) for x in LIVE]
    batch = s.execute(
        select(BatchRow.id).where(BatchRow.status.in_(live), BatchRow.model.in_(list(names)))
    ).first()
    if batch is not None:
        return True
    # A batch still validating has no units yet: any of its lines may name the model.
    validating = s.execute(
        select(BatchRow.id).where(
            BatchRow.status == str(BatchStatus.VALIDATING), BatchRow.model.is_(None)
        )
    ).first()
    if validating is not None:
        return True
    unit = s.execute(
        select(WorkUnitRow.id)
        .join(BatchRow, BatchRow.id == WorkUnitRow.batch_id)
        .where(WorkUnitRow.model == model_id, BatchRow.status.in_(live))
    ).first()
    return unit is not None
