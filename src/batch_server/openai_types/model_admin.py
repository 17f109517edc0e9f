"""Objects of the model registry's admin endpoints (``/v1/admin/models``): the bodies that
add and change a model, a model's admin view and its test loads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_server.config import EngineName
from batch_server.openai_types.bodies import Endpoint
from batch_server.openai_types.common import APIObject, DataList, Identified

ModelStatus = Literal["untested", "testing", "ready", "failed"]
TestStatus = Literal["queued", "running", "succeeded", "failed"]

# A model id: what batch lines name in body.model (a Hugging Face style "org/name" too).
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*(/[A-Za-z0-9._:@+-]+)*$"


ModelName = Annotated[str, Field(min_length=1, max_length=256, pattern=MODEL_ID_PATTERN)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelFields(_Body):
    """The registry fields an admin may set (``env`` only in the config file)."""

    engine: EngineName | None = None
    source: str | None = Field(
        default=None,
        max_length=4096,
        description="A local path of the weights, or 'package:MODULE/FILE' for weights "
        "shipped in an installed Python package (the registry's 'path')",
    )
    engine_args: dict[str, Any] | None = None
    aliases: list[ModelName] | None = Field(default=None, max_length=32)
    chat_template: str | None = Field(default=None, max_length=200_000)
    unit_size: int | None = Field(default=None, ge=1, le=100_000)
    max_memory_mb: int | None = Field(default=None, ge=1)
    endpoints: list[Endpoint] | None = None
    install_hint: str | None = Field(default=None, max_length=1000)


class ModelCreate(ModelFields):
    """``POST /v1/admin/models``."""

    id: ModelName
    engine: EngineName = "llamacpp"


class ModelUpdate(ModelFields):
    """``PATCH /v1/admin/models/{id}``: the fields given replace the model's (``null``
    clears an optional one); its test status goes back to ``untested``."""


class ModelTest(Identified):
    """A test load: a worker loads the model in its engine process and runs one request."""

    object: Literal["model.test"] = "model.test"
    model: str
    status: TestStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    error: str | None = Field(description="Why the model failed: its engine's own message")
    load_seconds: float | None
    memory_bytes: int | None = Field(description="The engine's resident memory once loaded")
    time_to_first_token: float | None = Field(
        description="Seconds for a one-token answer (text models)"
    )
    request_seconds: float | None = Field(description="Seconds for the full test request")
    prompt_tokens: int | None
    output_tokens: int | None
    output: str | None = Field(description="The answer's text (or a summary of it)")
    endpoint: str | None = Field(description="The endpoint the test request used")


class ModelSpecView(APIObject):
    """A registry entry as an admin sees it (``env``: the names only)."""

    engine: EngineName
    source: str
    engine_args: dict[str, Any]
    aliases: list[str]
    chat_template: str | None
    unit_size: int | None
    max_memory_mb: int | None
    endpoints: list[str] | None
    install_hint: str | None
    env: list[str] = Field(description="Names of the engine's environment variables")


class AdminModel(Identified):
    object: Literal["admin.model"] = "admin.model"
    origin: Literal["config", "api", "fine_tune"]
    created_at: int
    updated_at: float
    status: ModelStatus
    status_reason: str | None
    spec: ModelSpecView
    latest_test: ModelTest | None


class AdminModelList(DataList[AdminModel]):
    pass


class AdminModelDeleted(APIObject):
    id: str
    object: Literal["admin.model.deleted"] = "admin.model.deleted"
    deleted: bool
