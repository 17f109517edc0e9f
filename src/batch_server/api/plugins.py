"""Plugins API (an extension): ``GET /v1/plugins`` lists what this process found, and the
admin switches ``POST /v1/admin/plugins/{name}/enable|disable`` (admin keys only), kept in
the database and obeyed by every worker and API replica within about a second."""

from __future__ import annotations

from fastapi import APIRouter

from batch_server.api.auth import AdminAuth, Auth
from batch_server.api.deps import Ctx
from batch_server.api.openapi import errors
from batch_server.app_context import AppContext
from batch_server.errors import APIError, NotFound
from batch_server.openai_types.plugins import Plugin, PluginList
from batch_server.plugins import states
from batch_server.plugins.views import plugin_view, plugin_views

router = APIRouter(tags=["plugins"], responses=errors(401, 403))


@router.get("/v1/plugins")
def list_plugins(ctx: Ctx, _who: Auth) -> PluginList:
    """The plugins this server found (entry points and ``plugins_dir``), each with its
    hooks, templates, exporters, ratings, whether it is enabled and any load error."""
    return PluginList(data=plugin_views(ctx.plugins))


def _switch(ctx: AppContext, name: str, enabled: bool) -> Plugin:
    info = ctx.plugins.infos.get(name)
    if info is None:
        raise NotFound("plugin", name, param="name")
    if enabled and not info.loaded:
        raise APIError(
            f"Plugin '{name}' failed to load and cannot be enabled: {info.error}",
            param="name",
            code="plugin_not_loaded",
        )
    states.set_enabled(ctx.db, name, enabled)
    ctx.plugins.refresh()
    return plugin_view(ctx.plugins, name)


@router.post("/v1/admin/plugins/{name}/enable", responses=errors(400, 404))
def enable_plugin(name: str, ctx: Ctx, _who: AdminAuth) -> Plugin:
    """Switch a plugin on for every worker and API replica."""
    return _switch(ctx, name, True)


@router.post("/v1/admin/plugins/{name}/disable", responses=errors(404))
def disable_plugin(name: str, ctx: Ctx, _who: AdminAuth) -> Plugin:
    """Switch a plugin off: its templates are refused by validation and fail their
    requests at run time; its exporters, renderers and ratings are not used."""
    return _switch(ctx, name, False)
