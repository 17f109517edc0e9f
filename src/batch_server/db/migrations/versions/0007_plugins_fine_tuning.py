"""issues 16 and 18: plugin fields of results, plugin states, fine-tuning jobs with their
events and checkpoints

Revision ID: 0007_plugins_fine_tuning
Revises: 0006_curation
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_plugins_fine_tuning"
down_revision = "0006_curation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fields", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("plugin_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ratings", sa.JSON(), nullable=True))

    op.create_table(
        "plugin_states",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plugin_states")),
    )
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("training_file", sa.String(length=64), nullable=False),
        sa.Column("validation_file", sa.String(length=64), nullable=True),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("suffix", sa.String(length=64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("estimated_finish", sa.BigInteger(), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("fine_tuned_model", sa.String(length=256), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_fine_tuning_jobs")),
        sa.UniqueConstraint("id", name=op.f("uq_fine_tuning_jobs_id")),
    )
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fine_tuning_jobs_claim", ["status", "lease_expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_fine_tuning_jobs_owner"), ["owner"], unique=False)

    op.create_table(
        "fine_tuning_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("key", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_fine_tuning_events")),
        sa.UniqueConstraint("id", name=op.f("uq_fine_tuning_events_id")),
        sa.UniqueConstraint("job_id", "key", name=op.f("uq_fine_tuning_events_job_id")),
    )
    with op.batch_alter_table("fine_tuning_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_events_job_id"), ["job_id"], unique=False
        )

    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(length=256), nullable=False),
        sa.Column("location", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_fine_tuning_checkpoints")),
        sa.UniqueConstraint("id", name=op.f("uq_fine_tuning_checkpoints_id")),
        sa.UniqueConstraint(
            "job_id", "step", name=op.f("uq_fine_tuning_checkpoints_job_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("fine_tuning_checkpoints")
    with op.batch_alter_table("fine_tuning_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_events_job_id"))
    op.drop_table("fine_tuning_events")
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_owner"))
        batch_op.drop_index("ix_fine_tuning_jobs_claim")
    op.drop_table("fine_tuning_jobs")
    op.drop_table("plugin_states")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("ratings")
        batch_op.drop_column("plugin_error")
        batch_op.drop_column("fields")
