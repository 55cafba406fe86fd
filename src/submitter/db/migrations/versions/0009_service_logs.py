"""service_logs: recent log records of every service process, bounded by count and age

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from submitter.db.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("service", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("logger", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_logs_service_id", "service_logs", ["service", "id"])
    op.create_index("ix_service_logs_host_id", "service_logs", ["host", "id"])
    op.create_index("ix_service_logs_job_id_id", "service_logs", ["job_id", "id"])
    op.create_index("ix_service_logs_time", "service_logs", ["time"])


def downgrade() -> None:
    op.drop_table("service_logs")
