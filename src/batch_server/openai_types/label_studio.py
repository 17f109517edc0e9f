"""The Label Studio round trip (an extension): bodies and answers of
``POST /v1/batches/{batch_id}/label-studio/export`` and ``…/import``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from batch_server.openai_types.common import APIObject

FilterLabel = Literal["golden", "fixed", "wrong", "skip", "none"]


class LabelStudioFilter(APIObject):
    labels: list[FilterLabel] | None = Field(
        default=None,
        max_length=5,
        description="Only requests with one of these labels here ('none': not annotated yet)",
    )
    custom_ids: list[str] | None = Field(
        default=None, max_length=50_000, description="Only these requests"
    )
    failed: bool | None = Field(
        default=None, description="true: only failed requests; false: only answered ones"
    )
    limit: int | None = Field(
        default=None, ge=1, le=50_000, description="At most this many new tasks"
    )


class LabelStudioExportBody(APIObject):
    project_id: int | None = Field(
        default=None,
        ge=1,
        description="The Label Studio project to add the tasks to; a new project (with the "
        "review labeling config) when left out",
    )
    filter: LabelStudioFilter = Field(default_factory=LabelStudioFilter)


class LabelStudioImportBody(APIObject):
    project_id: int | None = Field(
        default=None,
        ge=1,
        description="Only the tasks sent to this project (default: every project)",
    )


class LabelStudioExport(APIObject):
    object: Literal["label_studio.export"] = "label_studio.export"
    batch_id: str
    project_id: int
    project_url: str = Field(description="The project's data manager in Label Studio")
    project_created: bool
    tasks_created: int
    already_sent: int = Field(
        description="Selected requests already sent to this project (not sent again)"
    )
    task_ids: list[int] = Field(description="The Label Studio ids of the tasks created now")


class LabelStudioImport(APIObject):
    object: Literal["label_studio.import"] = "label_studio.import"
    batch_id: str
    project_id: int | None
    imported: int = Field(description="Annotations written or changed here")
    unchanged: int = Field(description="Annotations already here as they are in Label Studio")
    not_annotated: int = Field(description="Tasks nobody has annotated in Label Studio yet")
    skipped: int
    skipped_reasons: dict[str, int] = Field(
        description="Why annotations were skipped: reason → count"
    )
