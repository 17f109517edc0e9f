"""The ``batch-server`` command: ``serve`` (API + in-process worker), ``worker``, and the
client commands of :mod:`batch_server.client_commands`."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from batch_server import client_commands
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


# Client commands (submit, status, list, queue, results, cancel, priority, models): they
# talk to a server over HTTP, see client_commands.py.
for _name, _command in client_commands.COMMANDS.items():
    app.command(_name)(_command)


if __name__ == "__main__":
    app()
