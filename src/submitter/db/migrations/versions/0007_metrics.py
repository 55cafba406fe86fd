"""metrics: indexes for /metrics' job cursors, HPC command counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_started_at", "jobs", ["started_at"], unique=False)
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"], unique=False)
    op.create_table(
        "hpc_command_counts",
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=100), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task", "cluster", "command"),
    )


def downgrade() -> None:
    op.drop_table("hpc_command_counts")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_started_at", table_name="jobs")
