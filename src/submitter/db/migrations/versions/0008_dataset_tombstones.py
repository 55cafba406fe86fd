"""dataset tombstones: a deleted dataset version keeps its row (deleted_at)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from submitter.db.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("deleted_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Tombstones would look like live datasets without their Parquet: drop them first
    # (the model versions that named them keep no dataset then).
    op.execute(
        "UPDATE model_versions SET dataset_id = NULL WHERE dataset_id IN "
        "(SELECT id FROM datasets WHERE deleted_at IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM dataset_references WHERE dataset_id IN "
        "(SELECT id FROM datasets WHERE deleted_at IS NOT NULL)"
    )
    op.execute("DELETE FROM datasets WHERE deleted_at IS NOT NULL")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("deleted_at")
