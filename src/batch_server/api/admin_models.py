"""The model registry's admin endpoints (admin keys only): add, show, change and remove
models at run time, and test-load them on a worker.

Models of the config file (origin "config") are shown but not changed here: the file is
authoritative for them. What would let an admin key run code or read the worker's
secrets is refused, and set in the config file only: ``env`` (``LD_PRELOAD`` runs code in
the engine process) and the engine arguments of :data:`CONFIG_ONLY_ARGS`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from batch_server.api.auth import AdminAuth
from batch_server.api.deps import Ctx, invalid_parameter, json_payload
from batch_server.api.openapi import errors, json_body
from batch_server.app_context import AppContext
from batch_server.config import ModelSpec
from batch_server.db.tables import ModelTestRow
from batch_server.errors import APIError, Conflict, NotFound
from batch_server.models import tests
from batch_server.models.registry import ConfigModel, ModelInUse
from batch_server.openai_types.model_admin import (
    AdminModel,
    AdminModelDeleted,
    AdminModelList,
    ModelCreate,
    ModelSpecView,
    ModelTest,
    ModelUpdate,
)

router = APIRouter(prefix="/v1/admin/models", tags=["admin"], responses=errors(400, 401, 403))

# A long poll: a client waiting longer asks again (GET …/tests/{test_id}?wait=…).
MAX_WAIT_SECONDS = 30.0
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)]

ENV_REFUSED = (
    "'env' cannot be set over the API: an engine's environment (LD_PRELOAD, for one) runs "
    "code in the engine process. Set it in the config file."
)
# Engine arguments refused over the API: trust_remote_code runs Python code shipped with
# the weights; the openai engine's api_key_env sends any environment variable of the
# worker (a secret of another service) to whatever base_url says.
CONFIG_ONLY_ARGS = ("trust_remote_code", "api_key_env")
CONFIG_MODEL = (
    "Model '{}' is defined in the config file, which is authoritative for it; change it there"
)
PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Body fields and the registry's names for them
SPEC_NAMES = {"source": "path"}


def test_object(row: ModelTestRow) -> ModelTest:
    return ModelTest(
        id=row.id,
        model=row.model,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        worker=row.worker,
        error=row.error,
        load_seconds=row.load_seconds,
        memory_bytes=row.memory_bytes,
        time_to_first_token=row.time_to_first_token,
        request_seconds=row.request_seconds,
        prompt_tokens=row.prompt_tokens,
        output_tokens=row.output_tokens,
        output=row.output,
        endpoint=None if row.status == tests.QUEUED else _endpoint(row),
    )


def _endpoint(row: ModelTestRow) -> str | None:
    return (row.provenance or {}).get("endpoint")


def admin_model(ctx: AppContext, model_id: str, latest: ModelTestRow | None) -> AdminModel:
    registry = ctx.models.current()
    spec, state = registry.specs[model_id], registry.state(model_id)
    assert state is not None
    return AdminModel(
        id=model_id,
        origin=state.origin,
        created_at=state.created_at,
        updated_at=state.updated_at,
        status=state.status,
        status_reason=state.status_reason,
        spec=ModelSpecView(
            engine=spec.engine,
            source=spec.path,
            engine_args=spec.engine_args,
            aliases=spec.aliases,
            chat_template=spec.chat_template,
            unit_size=spec.unit_size,
            max_memory_mb=spec.max_memory_mb,
            endpoints=spec.endpoints,
            install_hint=spec.install_hint,
            env=sorted(spec.env),
        ),
        latest_test=test_object(latest) if latest else None,
    )


def _registered(ctx: AppContext, model_id: str) -> str:
    """The registry id of ``model_id`` (an alias too), or 404."""
    resolved = ctx.models.refresh().resolve(model_id)
    if resolved is None:
        raise NotFound("model", model_id, param="model_id")
    return resolved


def _show(ctx: AppContext, model_id: str) -> AdminModel:
    return admin_model(ctx, model_id, tests.latest(ctx.db, [model_id]).get(model_id))


def _parse(payload: Any, model: type[ModelCreate] | type[ModelUpdate]) -> dict[str, Any]:
    """The body's fields (those given), or OpenAI's 400 naming the bad parameter."""
    if not isinstance(payload, dict):
        raise APIError("The body must be a JSON object", code="invalid_value")
    if "env" in payload:
        raise APIError(ENV_REFUSED, param="env", code="env_not_allowed")
    args = payload.get("engine_args")
    for name in CONFIG_ONLY_ARGS:
        if isinstance(args, dict) and name in args:
            raise APIError(
                f"engine_args.{name} cannot be set over the API (it could run code or send "
                "a secret of the worker elsewhere). Set it in the config file.",
                param="engine_args",
                code="engine_arg_not_allowed",
            )
    try:
        body = model.model_validate(payload)
    except ValidationError as exc:
        raise invalid_parameter(exc.errors()[0], type_status=400) from exc
    fields = {SPEC_NAMES.get(k, k): v for k, v in body.model_dump(exclude_unset=True).items()}
    # null clears a field: a list or mapping to empty
    cleared: dict[str, Any] = {"aliases": [], "engine_args": {}}
    return {k: cleared[k] if v is None and k in cleared else v for k, v in fields.items()}


def _spec(fields: dict[str, Any]) -> ModelSpec:
    source = fields.get("path") or ""
    module = source.removeprefix("package:").partition("/")[0]
    if source.startswith("package:") and not PACKAGE_NAME.fullmatch(module):
        # a dotted name would import its parent packages to find it
        raise APIError(
            "'source' is package:MODULE/FILE with MODULE a top-level package name",
            param="source",
            code="invalid_value",
        )
    try:
        return ModelSpec.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        param = {"path": "source"}.get(loc[0], loc[0]) if loc else "source"
        message = str(err["msg"]).removeprefix("Value error, ").replace("'path'", "'source'")
        raise APIError(message, param=param, code="invalid_value") from exc


def _check_names(ctx: AppContext, model_id: str, aliases: list[str], own: str | None) -> None:
    """409 when the id or an alias is already a name of another model."""
    taken = {n: m for n, m in ctx.models.refresh().aliases().items() if m != own}
    for name, param in [(model_id, "id"), *((a, "aliases") for a in aliases)]:
        if name in taken:
            raise Conflict(
                f"'{name}' is already a name of model '{taken[name]}'",
                param=param,
                code="model_exists" if param == "id" else "alias_taken",
            )


@router.get("")
def list_models(ctx: Ctx, _who: AdminAuth) -> AdminModelList:
    latest = tests.latest(ctx.db)
    ids = list(ctx.models.refresh().specs)
    return AdminModelList(data=[admin_model(ctx, m, latest.get(m)) for m in ids])


@router.post(
    "",
    status_code=201,
    openapi_extra=json_body(ModelCreate),
    responses=errors(409),
)
async def add_model(request: Request, ctx: Ctx, _who: AdminAuth) -> AdminModel:
    """Add a model (origin "api", status "untested"); batches may use it at once."""
    fields = _parse(await json_payload(request), ModelCreate)
    model_id = fields.pop("id")
    spec = _spec(fields)
    _check_names(ctx, model_id, spec.aliases, None)
    try:
        ctx.models.add(model_id, spec)
    except KeyError as exc:
        raise Conflict(f"Model '{model_id}' exists", param="id", code="model_exists") from exc
    return _show(ctx, model_id)


@router.post("/{model_id:path}/test", status_code=201, responses=errors(404))
def test_model(model_id: str, ctx: Ctx, _who: AdminAuth, wait: Wait = 0) -> ModelTest:
    """Queue a test load on a worker (the model's status becomes "testing"; a test of the
    same entry still waiting is the answer instead); with ``?wait=SECONDS`` (at most
    30), answer once it ended or that long has passed."""
    resolved = _registered(ctx, model_id)
    state = ctx.models.current().state(resolved)
    assert state is not None
    row = tests.create(ctx.db, resolved, state.updated_at)
    ctx.models.set_status(resolved, "testing", None)
    ctx.jobs.wake_workers()
    return test_object(_wait(ctx, row.id, wait) or row)


@router.get("/{model_id:path}/tests/{test_id}", responses=errors(404))
def get_test(model_id: str, test_id: str, ctx: Ctx, _who: AdminAuth, wait: Wait = 0) -> ModelTest:
    """A test load (``?wait=SECONDS``: once it ended, or that long has passed)."""
    row = _wait(ctx, test_id, wait)
    if row is None or row.model != ctx.models.refresh().resolve(model_id):
        raise NotFound("model test", test_id, param="test_id")
    return test_object(row)


def _wait(ctx: AppContext, test_id: str, seconds: float) -> ModelTestRow | None:
    deadline = time.monotonic() + seconds
    while True:
        row = tests.get(ctx.db, test_id)
        if row is not None and row.status in tests.ENDED:
            ctx.models.refresh()  # this process's registry shows the verdict from now on
            return row
        if row is None or time.monotonic() >= deadline:
            return row
        time.sleep(0.2)


@router.get("/{model_id:path}", responses=errors(404))
def show_model(model_id: str, ctx: Ctx, _who: AdminAuth) -> AdminModel:
    """A model's registry entry, origin, test status and latest test."""
    return _show(ctx, _registered(ctx, model_id))


@router.patch("/{model_id:path}", openapi_extra=json_body(ModelUpdate), responses=errors(404, 409))
async def change_model(model_id: str, request: Request, ctx: Ctx, _who: AdminAuth) -> AdminModel:
    """Change an API-added model (the fields given); its test status goes back to
    "untested"."""
    resolved = _registered(ctx, model_id)
    changes = _parse(await json_payload(request), ModelUpdate)
    current = ctx.models.current()
    if current.state(resolved).origin == "config":  # type: ignore[union-attr]
        raise Conflict(CONFIG_MODEL.format(resolved), param="model_id", code="config_model")
    old = current.specs[resolved].model_dump(exclude_defaults=True)
    _spec({**old, **changes})  # a 400 naming the field, before anything is written
    _check_names(ctx, resolved, changes.get("aliases") or [], resolved)
    try:
        ctx.models.update(resolved, changes)
    except ConfigModel as exc:
        raise Conflict(
            CONFIG_MODEL.format(resolved), param="model_id", code="config_model"
        ) from exc
    except KeyError as exc:
        raise NotFound("model", model_id, param="model_id") from exc
    return _show(ctx, resolved)


@router.delete("/{model_id:path}", responses=errors(404, 409))
def delete_model(model_id: str, ctx: Ctx, _who: AdminAuth) -> AdminModelDeleted:
    """Remove an API-added model that no batch still running uses."""
    resolved = _registered(ctx, model_id)
    try:
        ctx.models.remove(resolved)
    except ConfigModel as exc:
        raise Conflict(
            CONFIG_MODEL.format(resolved), param="model_id", code="config_model"
        ) from exc
    except ModelInUse as exc:
        raise Conflict(
            f"Model '{resolved}' is used by a batch that has not ended (or may be: a batch "
            "is still validating); remove it once the batch has ended (or cancel it)",
            param="model_id",
            code="model_in_use",
        ) from exc
    except KeyError as exc:
        raise NotFound("model", model_id, param="model_id") from exc
    return AdminModelDeleted(id=resolved, deleted=True)
