"""delegations: owner-signed device delegations for the owner's page (one-time ticket, the device
key that claimed it, sign-out), with a state MAC over what the server relies on

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'device_delegations',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('owner_id', sa.String(length=40), nullable=False),
        sa.Column('envelope', sa.LargeBinary(), nullable=False),
        sa.Column('digest', sa.String(length=80), nullable=False),
        sa.Column('claim', sa.LargeBinary(), nullable=True),
        sa.Column('device_id', sa.String(length=40), nullable=True),
        sa.Column('device_key', sa.LargeBinary(), nullable=True),
        sa.Column('label', sa.String(length=120), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('claim_by', sa.String(length=32), nullable=False),
        sa.Column('not_after', sa.String(length=32), nullable=False),
        sa.Column('claimed_at', sa.String(length=32), nullable=True),
        sa.Column('revoked_at', sa.String(length=32), nullable=True),
        sa.Column('revoked_by', sa.String(length=80), nullable=True),
        sa.Column('last_used_at', sa.String(length=32), nullable=True),
        sa.Column('state_mac', sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['accounts.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_device_delegations_owner_id'), 'device_delegations', ['owner_id'], unique=False)
    op.create_index(op.f('ix_device_delegations_device_id'), 'device_delegations', ['device_id'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_device_delegations_device_id'), table_name='device_delegations')
    op.drop_index(op.f('ix_device_delegations_owner_id'), table_name='device_delegations')
    op.drop_table('device_delegations')
