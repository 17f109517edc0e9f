"""The ``batch-server`` command: ``serve`` (API + in-process worker), ``worker``, ``keys``
(API key administration) and the client commands of :mod:`batch_server.client_commands`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batch_server import (
    bench_command,
    client_commands,
    collection_commands,
    comparison_commands,
    fine_tuning_commands,
    label_studio_commands,
    logs,
    model_commands,
    plugin_commands,
)
from batch_server.config import ModelNotAvailable, Settings, load_settings

if TYPE_CHECKING:
    from batch_server.db.session import Database
    from batch_server.models.registry import Registry

app = typer.Typer(
    help="vLLM Batch Server: an OpenAI-compatible Batch API for your own GPUs.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file", exists=True, dir_okay=False),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy database URL")]


def _check_default_model(settings: Settings) -> None:
    if settings.default_model:
        try:
            settings.models[settings.default_model].resolve_path()
        except ModelNotAvailable as exc:
            typer.secho(
                f"warning: default model {settings.default_model!r}: {exc}",
                fg=typer.colors.YELLOW,
                err=True,
            )


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run a worker inside the server")
    ] = True,
    allow_open: Annotated[
        bool | None,
        typer.Option("--allow-open", help="Run without API keys beyond loopback, on purpose"),
    ] = None,
    log_level: str = "info",
) -> None:
    """Serve the API (and, by default, a worker in the same process)."""
    import uvicorn

    from batch_server.api.auth import UnsafeExposure
    from batch_server.app import create_app

    settings = load_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        allow_open=allow_open,
    )
    logs.setup(log_level, settings.log_json)
    if worker:
        _check_default_model(settings)
    try:
        application = create_app(settings, run_worker=worker)
    except UnsafeExposure as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"vLLM Batch Server on http://{settings.host}:{settings.port}/v1 "
        f"(data: {settings.data_dir.resolve()})"
    )
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # keep the handlers of logs.setup (batch and request ids)
        proxy_headers=False,  # X-Forwarded-*: only from trusted_proxies (api/guards.py)
        timeout_graceful_shutdown=10,
    )


@app.command("worker")
def run_worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    log_level: str = "info",
) -> None:
    """Run a standalone worker against the same database and data directory."""
    from batch_server.app_context import AppContext

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    logs.setup(log_level, settings.log_json)
    _check_default_model(settings)
    services = AppContext.build(settings).start_services(worker=True, in_thread=False)
    worker = services.worker
    assert worker is not None
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    try:
        worker.run_forever()
    finally:
        services.stop()


keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _database(config: Path | None, data_dir: Path | None, database_url: str | None) -> Database:
    from batch_server.db.session import Database

    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    return db


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for")],
    admin: Annotated[
        bool, typer.Option("--admin", help="May see everything and use /v1/admin")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a key and print its token (shown once; only a hash is stored)."""
    from batch_server import keys

    row, token = keys.create_key(_database(config, data_dir, database_url), name, admin)
    typer.echo(f"created {'admin ' if admin else ''}key {row.id} ({name})", err=True)
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DbOpt = None
) -> None:
    """List keys (id, prefix, name, admin, revoked)."""
    from batch_server import keys

    for row in keys.list_keys(_database(config, data_dir, database_url)):
        state = "revoked" if row.revoked_at else "active"
        role = "admin" if row.admin else "user"
        typer.echo(f"{row.id}\t{row.prefix}…\t{role}\t{state}\t{row.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DbOpt = None
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from batch_server import keys

    if not keys.revoke_key(_database(config, data_dir, database_url), key_id):
        typer.secho(f"no active key {key_id}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


models_app = typer.Typer(
    help="List the server's models (no subcommand), add, show, test or remove one, or "
    "prepare a local copy of one.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(
    ctx: typer.Context,
    url: client_commands.UrlOpt = client_commands.DEFAULT_URL,
    api_key: client_commands.KeyOpt = None,
    as_json: client_commands.JsonOpt = False,
) -> None:
    """List the server's models with their measured throughput."""
    if ctx.invoked_subcommand is None:
        client_commands.models(url, api_key, as_json)


@models_app.command("prepare")
def prepare_model(
    model: Annotated[str, typer.Argument(help="Model id or alias from the registry")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make the Hugging Face copy of a GGUF model that vLLM serves (cached in the data
    directory; nothing is downloaded)."""
    from batch_server.engines.prepare import gguf_to_hf, hf_copy_dir, is_prepared

    settings = load_settings(config, data_dir=data_dir)
    logs.setup("info", settings.log_json)
    registry = _registry(settings)
    model_id = registry.resolve(model)
    spec = registry.get(model_id) if model_id else None
    if model_id is None or spec is None:
        typer.secho(f"error: model {model!r} is not in the registry", fg="red", err=True)
        raise typer.Exit(2)
    try:
        source = spec.resolve_path()
    except ModelNotAvailable as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if source.suffix != ".gguf":
        typer.echo(f"{model_id}: {source} is already in a format its engine reads")
        return
    target = hf_copy_dir(settings.data_dir, model_id)
    if is_prepared(target):
        typer.echo(f"{model_id}: already prepared in {target}")
        return
    gguf_to_hf(source, target)
    typer.echo(f"{model_id}: prepared {target}")


# Registry administration over HTTP (add, show, test, remove): see model_commands.py.
for _name, _command in model_commands.COMMANDS.items():
    models_app.command(_name)(_command)


def _registry(settings: Settings) -> Registry:
    """The registry as the database has it (seeded from this config)."""
    from batch_server.db.session import Database
    from batch_server.models.registry import ModelRegistry

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    registry = ModelRegistry(db, settings)
    registry.seed()
    snapshot = registry.current()
    db.dispose()
    return snapshot


# Client commands (submit, status, list, queue, results, cancel, priority, models): they
# talk to a server over HTTP, see client_commands.py.
for _name, _command in client_commands.COMMANDS.items():
    if _name != "models":  # `models` is the group above
        app.command(_name)(_command)

# Collections and their exports (issue 15), see collection_commands.py.
app.command("export")(collection_commands.export)
app.add_typer(collection_commands.collections_app, name="collections")
# Plugins (plugin_commands.py).
app.add_typer(plugin_commands.app, name="plugins")
# The Label Studio round trip (label_studio_commands.py).
app.add_typer(label_studio_commands.app, name="label-studio")


# Fine-tuning jobs, over HTTP: see fine_tuning_commands.py.
app.add_typer(fine_tuning_commands.app, name="fine-tune")

# Comparisons, over HTTP: see comparison_commands.py.
app.add_typer(comparison_commands.app, name="compare")

# Benchmarks, over HTTP: see bench_command.py.
app.command("bench")(bench_command.bench)


if __name__ == "__main__":
    app()
