"""issue 15: annotations and their history, collections with their versions and frozen
items, Label Studio tasks

Revision ID: 0006_curation
Revises: 0005_models
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_curation"
down_revision = "0005_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collection_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_versions")),
        sa.UniqueConstraint(
            "collection_id", "version", name=op.f("uq_collection_versions_collection_id")
        ),
    )
    op.create_table(
        "annotation_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("rater", sa.String(length=256), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotation_events")),
    )
    with op.batch_alter_table("annotation_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_annotation_events_request", ["batch_id", "custom_id"], unique=False
        )

    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("request_index", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("fixed_answer", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rater", sa.String(length=256), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
        sa.UniqueConstraint("batch_id", "custom_id", name=op.f("uq_annotations_batch_id")),
    )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_annotations_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index("ix_annotations_owner_label", ["owner", "label"], unique=False)

    op.create_table(
        "collection_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("example", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_items")),
        sa.UniqueConstraint(
            "collection_id",
            "version",
            "batch_id",
            "custom_id",
            name=op.f("uq_collection_items_collection_id"),
        ),
    )
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_collection_items_version", ["collection_id", "version"], unique=False
        )

    op.create_table(
        "collections",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_collections")),
        sa.UniqueConstraint("id", name=op.f("uq_collections_id")),
        sa.UniqueConstraint("owner", "name", name=op.f("uq_collections_owner")),
    )
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_collections_owner"), ["owner"], unique=False)

    op.create_table(
        "label_studio_tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("pushed_at", sa.Float(), nullable=False),
        sa.Column("pulled_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_studio_tasks")),
        sa.UniqueConstraint("project_id", "task_id", name=op.f("uq_label_studio_tasks_project_id")),
    )
    with op.batch_alter_table("label_studio_tasks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_label_studio_tasks_batch_id"), ["batch_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("collection_versions")
    with op.batch_alter_table("label_studio_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_studio_tasks_batch_id"))

    op.drop_table("label_studio_tasks")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collections_owner"))

    op.drop_table("collections")
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.drop_index("ix_collection_items_version")

    op.drop_table("collection_items")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_index("ix_annotations_owner_label")
        batch_op.drop_index(batch_op.f("ix_annotations_batch_id"))

    op.drop_table("annotations")
    with op.batch_alter_table("annotation_events", schema=None) as batch_op:
        batch_op.drop_index("ix_annotation_events_request")

    op.drop_table("annotation_events")
