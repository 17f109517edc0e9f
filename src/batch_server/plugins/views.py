"""Plugins as the API shows them (``GET /v1/plugins``, the plugins page)."""

from __future__ import annotations

from batch_server.openai_types.plugins import Plugin, TemplateInfo
from batch_server.plugins.manager import Plugins


def plugin_view(plugins: Plugins, name: str) -> Plugin:
    info = plugins.infos[name]
    templates = [plugins.templates[t][1] for t in info.templates]
    return Plugin(
        name=info.name,
        source="entry_point" if info.source == "entry_point" else "plugins_dir",
        version=info.version,
        hooks=info.hooks,
        enabled=plugins.enabled(name),
        loaded=info.loaded,
        error=info.error,
        templates=[
            TemplateInfo(
                name=t.name,
                description=t.description,
                input_schema=t.input_schema,
                output_schema=t.output_schema,
            )
            for t in templates
        ],
        exporters=info.exporters,
        ratings=info.ratings,
    )


def plugin_views(plugins: Plugins) -> list[Plugin]:
    return [plugin_view(plugins, name) for name in plugins.infos]
