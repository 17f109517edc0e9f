"""The ``batch-server`` command: ``serve`` (API + in-process worker) and ``worker``."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from batch_server.config import ModelNotAvailable, Settings, load_settings

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


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
    log_level: str = "info",
) -> None:
    """Serve the API (and, by default, a worker in the same process)."""
    import uvicorn

    from batch_server.app import create_app

    _setup_logging(log_level)
    settings = load_settings(
        config, host=host, port=port, data_dir=data_dir, database_url=database_url
    )
    if worker:
        _check_default_model(settings)
    application = create_app(settings, run_worker=worker)
    typer.echo(
        f"vLLM Batch Server on http://{settings.host}:{settings.port}/v1 "
        f"(data: {settings.data_dir.resolve()})"
    )
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
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
    from batch_server.worker import Worker

    _setup_logging(log_level)
    settings = load_settings(config, data_dir=data_dir, database_url=database_url)
    _check_default_model(settings)
    ctx = AppContext.build(settings)
    worker = Worker(settings, ctx.db, ctx.store)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run_forever()


models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def prepare_model(
    model: Annotated[str, typer.Argument(help="Model id or alias from the registry")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Make the Hugging Face copy of a GGUF model that vLLM serves (cached in the data
    directory; nothing is downloaded)."""
    from batch_server.engines.prepare import gguf_to_hf, hf_copy_dir, is_prepared

    _setup_logging("info")
    settings = load_settings(config, data_dir=data_dir)
    model_id = settings.model_aliases().get(model)
    if model_id is None:
        typer.secho(f"error: model {model!r} is not in the registry", fg="red", err=True)
        raise typer.Exit(2)
    spec = settings.models[model_id]
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


if __name__ == "__main__":
    app()
