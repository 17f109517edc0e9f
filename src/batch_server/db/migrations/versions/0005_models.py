"""issue 14: the model registry, model tests, batch provenance, benchmarks, comparisons;
batches.kind

Revision ID: 0005_models
Revises: 0004_output_expires_after
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_models"
down_revision = "0004_output_expires_after"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("first_result_at", sa.Float(), nullable=True),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_runs")),
        sa.UniqueConstraint("batch_id", "model", "worker", name=op.f("uq_batch_runs_batch_id")),
    )
    with op.batch_alter_table("batch_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_runs_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "benchmarks",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("host", sa.JSON(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_benchmarks")),
        sa.UniqueConstraint("id", name=op.f("uq_benchmarks_id")),
    )
    with op.batch_alter_table("benchmarks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_benchmarks_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_benchmarks_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_benchmarks_owner"), ["owner"], unique=False)

    op.create_table(
        "comparison_picks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("comparison_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("rater", sa.String(length=256), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparison_picks")),
        sa.UniqueConstraint(
            "comparison_id", "custom_id", name=op.f("uq_comparison_picks_comparison_id")
        ),
    )
    with op.batch_alter_table("comparison_picks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_comparison_picks_comparison_id"), ["comparison_id"], unique=False
        )

    op.create_table(
        "comparisons",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("input_file_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("batches", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_comparisons")),
        sa.UniqueConstraint("id", name=op.f("uq_comparisons_id")),
    )
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_comparisons_owner"), ["owner"], unique=False)

    op.create_table(
        "model_tests",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("time_to_first_token", sa.Float(), nullable=True),
        sa.Column("request_seconds", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_model_tests")),
        sa.UniqueConstraint("id", name=op.f("uq_model_tests_id")),
    )
    with op.batch_alter_table("model_tests", schema=None) as batch_op:
        batch_op.create_index("ix_model_tests_claim", ["status", "lease_expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_tests_model"), ["model"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="batch", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("kind")

    op.drop_table("models")
    with op.batch_alter_table("model_tests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_tests_model"))
        batch_op.drop_index("ix_model_tests_claim")

    op.drop_table("model_tests")
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comparisons_owner"))

    op.drop_table("comparisons")
    with op.batch_alter_table("comparison_picks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comparison_picks_comparison_id"))

    op.drop_table("comparison_picks")
    with op.batch_alter_table("benchmarks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_benchmarks_owner"))
        batch_op.drop_index(batch_op.f("ix_benchmarks_model"))
        batch_op.drop_index(batch_op.f("ix_benchmarks_batch_id"))

    op.drop_table("benchmarks")
    with op.batch_alter_table("batch_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_runs_batch_id"))

    op.drop_table("batch_runs")
