"""sweeps: a job's parent (the sweep that made it), its combination, a sweep's max_parallel

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("max_parallel", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep_index", sa.Integer(), nullable=True))
        batch.create_index("ix_jobs_parent_id_state", ["parent_id", "state"])
        batch.create_foreign_key(
            "fk_jobs_parent_id", "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_parent_id", type_="foreignkey")
        batch.drop_index("ix_jobs_parent_id_state")
        batch.drop_column("sweep_index")
        batch.drop_column("max_parallel")
        batch.drop_column("parent_id")
