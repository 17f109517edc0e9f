"""batches.output_expires_after; an index on files.expires_at for housekeeping

Revision ID: 0004_output_expires_after
Revises: 0002_issue4
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_output_expires_after"
down_revision = "0002_issue4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output_expires_after", sa.Integer(), nullable=True))
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_expires_at"))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("output_expires_after")
