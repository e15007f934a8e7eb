"""root of trust: account and generator bindings, state MACs, signed follows, operator-signed protected entries

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_COLUMNS = [
    ("accounts", "binding", sa.LargeBinary()),
    ("follows", "envelope", sa.LargeBinary()),
    ("cameos", "state_mac", sa.String(length=64)),
    ("protected", "binding", sa.LargeBinary()),
    ("grants", "state_mac", sa.String(length=64)),
    ("generators", "binding", sa.LargeBinary()),
]


def upgrade() -> None:
    for table, column, type_ in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(column, type_, nullable=True))


def downgrade() -> None:
    for table, column, _ in reversed(_COLUMNS):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(column)
