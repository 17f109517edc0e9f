"""Plugin objects (an extension): ``GET /v1/plugins`` and the admin switches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from batch_server.openai_types.common import APIObject, DataList


class TemplateInfo(APIObject):
    name: str
    description: str
    input_schema: dict[str, object]
    output_schema: dict[str, object] | None


class Plugin(APIObject):
    object: Literal["plugin"] = "plugin"
    name: str = Field(description="Its entry point's name, or its file's name in plugins_dir")
    source: Literal["entry_point", "plugins_dir"]
    version: str | None
    hooks: list[str] = Field(description="The hooks it implements")
    enabled: bool = Field(description="Whether every worker and API replica uses it now")
    loaded: bool = Field(description="false: it failed to import (and stays disabled)")
    error: str | None = Field(description="Why it failed to load, or a hook that raised")
    templates: list[TemplateInfo]
    exporters: list[str]
    ratings: list[str]


class PluginList(DataList[Plugin]):
    """``GET /v1/plugins``."""
