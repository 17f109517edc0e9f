"""The reference documentation keeps up with the code: every setting (and every field of
a model registry entry) is in docs/configuration.md, and every route of the app is in
docs/api.md (as Datasette's tests do for its settings, plugin hooks and views)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from batch_server.app import create_app
from batch_server.config import ModelSpec, Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
METHOD = r"(?:GET|HEAD|POST|PUT|PATCH|DELETE)"
# "| GET | `/v1/files` |", "| GET / PATCH | `/v1/admin/limits` |"
TABLE_ROW = re.compile(rf"^\|\s*({METHOD}(?:\s*/\s*{METHOD})*)\s*\|\s*`([^`]+)`", re.MULTILINE)
# "`GET /v1/queue`", "`GET /v1/models/{id or alias}`", "`GET /v1/stats/throughput?window=…`"
INLINE = re.compile(rf"`({METHOD}) (/[^`]*)`")
# FastAPI's own page for Swagger UI's OAuth2 login, which this API does not use.
UNDOCUMENTED = {("GET", "/docs/oauth2-redirect")}


def normalize(path: str) -> str:
    """A path without its query, every ``{parameter}`` (however named) as ``{}``."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0].strip())


def documented_routes(text: str) -> set[tuple[str, str]]:
    found = set()
    for methods, path in TABLE_ROW.findall(text):
        for method in re.findall(METHOD, methods):
            found.add((method, normalize(path)))
    for method, path in INLINE.findall(text):
        found.add((method, normalize(path)))
    return found


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> list[Route | Mount]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("docs"), default_model=None)
    return [
        r for r in create_app(settings, run_worker=False).routes if isinstance(r, Route | Mount)
    ]


def test_every_setting_is_in_configuration_md() -> None:
    names = backticked((DOCS / "configuration.md").read_text())
    missing = [name for name in Settings.model_fields if name not in names]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_model_registry_field_is_in_configuration_md() -> None:
    names = backticked((DOCS / "configuration.md").read_text())
    missing = [name for name in ModelSpec.model_fields if name not in names]
    assert not missing, f"registry fields missing from docs/configuration.md: {missing}"


def test_every_route_is_in_api_md(app_routes: list[Route | Mount]) -> None:
    text = (DOCS / "api.md").read_text()
    documented = documented_routes(text)
    missing = []
    for route in app_routes:
        if isinstance(route, Mount):
            if f"`{route.path}/" not in text:
                missing.append(f"{route.path}/…")
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if (method, route.path) in UNDOCUMENTED:
                continue
            if (method, normalize(route.path)) not in documented:
                missing.append(f"{method} {route.path}")
    assert not missing, f"routes missing from docs/api.md: {missing}"


def test_the_checks_see_api_routes(app_routes: list[Route | Mount]) -> None:
    """The route check reads real routes (not an empty list after a refactoring)."""
    paths = {r.path for r in app_routes if isinstance(r, APIRoute)}
    assert {"/v1/files", "/v1/batches/{batch_id}/cancel", "/health"} <= paths


def test_documented_route_parsing() -> None:
    text = (
        "| GET / PATCH | `/v1/admin/limits` | x |\n"
        "| POST | `/v1/batches` (multipart) | y |\n"
        "See `GET /v1/models/{id or alias}` and `GET /v1/stats/throughput?window=60`."
    )
    assert documented_routes(text) == {
        ("GET", "/v1/admin/limits"),
        ("PATCH", "/v1/admin/limits"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/models/{}"),
        ("GET", "/v1/stats/throughput"),
    }
