"""throughput samples for ETAs and the dashboard

Revision ID: 0002_issue4
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_issue4"
down_revision = "0002_issue5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throughput_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_throughput_samples")),
    )
    with op.batch_alter_table("throughput_samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_throughput_samples_batch_id"), ["batch_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_throughput_samples_ended_at"), ["ended_at"], unique=False
        )
        batch_op.create_index(
            "ix_throughput_samples_model_end", ["model", "ended_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("throughput_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_throughput_samples_model_end")
        batch_op.drop_index(batch_op.f("ix_throughput_samples_ended_at"))
        batch_op.drop_index(batch_op.f("ix_throughput_samples_batch_id"))
    op.drop_table("throughput_samples")
