"""Collections and their exports (an extension): named, versioned sets of annotated
examples, and the Files made from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from batch_server.openai_types.common import APIObject, Identified, ListObject

if TYPE_CHECKING:
    from batch_server.curation.collections import Version
    from batch_server.db.tables import CollectionItemRow, CollectionRow

ExportFormat = Literal[
    "openai-finetune-jsonl", "few-shot-json", "few-shot-prompt", "csv", "parquet"
]
Label = Literal["golden", "fixed", "wrong", "skip"]
ITEM_PREFIX = "citem_"
# custom_ids per add/remove entry (an add's become one SQL IN list: SQLite takes 32,766)
MAX_IDS = 10_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class CollectionBody(APIObject):
    """``POST /v1/collections``."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Unique per API key; letters, digits, '.', '_' and '-' (up to 128)",
    )
    description: str | None = Field(default=None, max_length=10_000)


class AddRule(APIObject):
    batch_id: str = Field(max_length=64)
    labels: list[Label] = Field(default=["golden", "fixed"], min_length=1, max_length=4)
    custom_ids: list[str] | None = Field(default=None, max_length=MAX_IDS)


class RemoveRule(APIObject):
    batch_id: str = Field(max_length=64)
    custom_ids: list[str] | None = Field(default=None, max_length=MAX_IDS)


class VersionBody(APIObject):
    """``POST /v1/collections/{id}/versions``: the rule that builds the next version."""

    add: list[AddRule] = Field(default=[], max_length=1000)
    remove: list[RemoveRule] = Field(default=[], max_length=1000)
    base: Literal["latest"] | int | None = Field(
        default="latest",
        description="Start from this version ('latest', a number, or null for empty)",
    )


class CollectionVersion(APIObject):
    object: Literal["collection.version"] = "collection.version"
    collection_id: str
    version: int
    created_at: int
    count: int = Field(description="Items in this version")
    rule: dict[str, Any] = Field(description="The rule that built it (base, add, remove)")
    stats: dict[str, int] = Field(description="added, kept (from the base), removed")

    @classmethod
    def of(cls, collection_id: str, v: Version) -> CollectionVersion:
        return cls(
            collection_id=collection_id,
            version=v.number,
            created_at=v.created_at,
            count=v.count,
            rule=v.rule,
            stats=v.stats,
        )


class Collection(Identified):
    object: Literal["collection"] = "collection"
    name: str
    description: str | None
    created_at: int
    updated_at: int
    version: int = Field(description="The latest version (0: none yet)")
    versions: list[CollectionVersion] | None = Field(
        description="Every version, oldest first (only when one collection is retrieved)"
    )

    @classmethod
    def from_row(cls, row: CollectionRow, versions: list[Version] | None = None) -> Collection:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
            versions=None
            if versions is None
            else [CollectionVersion.of(row.id, v) for v in versions],
        )


class CollectionList(ListObject[Collection]):
    pass


class CollectionDeleted(APIObject):
    id: str
    object: Literal["collection.deleted"] = "collection.deleted"
    deleted: bool


class CollectionItem(Identified):
    object: Literal["collection.item"] = "collection.item"
    version: int
    batch_id: str
    custom_id: str
    example: dict[str, Any] = Field(description="The frozen example")

    @classmethod
    def from_row(cls, row: CollectionItemRow) -> CollectionItem:
        return cls(
            id=f"{ITEM_PREFIX}{row.id}",
            version=row.version,
            batch_id=row.batch_id,
            custom_id=row.custom_id,
            example=row.example,
        )


class CollectionItemList(ListObject[CollectionItem]):
    pass


class ExportOptions(APIObject):
    labels: list[Label] | None = Field(
        default=None,
        min_length=1,
        description="Only these labels (default: golden and fixed for fine-tuning, else all)",
    )
    token_budget: int | None = Field(default=None, ge=1, le=10_000_000)
    diverse: bool = False
    similarity: float = Field(default=0.8, gt=0, le=1)
    max_examples: int | None = Field(default=None, ge=1, le=1000)
    include_system: bool = True


class ExportBody(APIObject):
    """``POST /v1/collections/{id}/exports``."""

    format: ExportFormat | str = Field(
        description="A built-in format, or the name of an enabled plugin's exporter "
        "(GET /v1/plugins)"
    )
    version: int | None = Field(default=None, ge=1, description="Default: the latest")
    options: ExportOptions = Field(default_factory=ExportOptions)


class CollectionExport(APIObject):
    object: Literal["collection.export"] = "collection.export"
    collection_id: str
    file_id: str
    filename: str
    purpose: str
    bytes: int
    format: ExportFormat | str = Field(description="A built-in format or a plugin's exporter")
    version: int
    count: int = Field(description="Examples written")
    skipped: int = Field(description="Examples that matched the labels but were left out")
    tokens: int | None = Field(description="Few-shot: estimated tokens of the chosen examples")
    token_estimate: str | None = Field(description="How tokens are counted (few-shot)")
    created_at: int
