"""service: nonces of signed requests, pending enrollments, releases to remote generators

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'http_nonces',
        sa.Column('key_id', sa.String(length=140), nullable=False),
        sa.Column('nonce', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key_id', 'nonce'),
    )
    op.create_index(op.f('ix_http_nonces_expires_at'), 'http_nonces', ['expires_at'], unique=False)
    op.create_table(
        'pending_enrollments',
        sa.Column('id', sa.String(length=48), nullable=False),
        sa.Column('account_id', sa.String(length=40), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_pending_enrollments_account_id'), 'pending_enrollments', ['account_id'], unique=False)
    op.create_index(op.f('ix_pending_enrollments_expires_at'), 'pending_enrollments', ['expires_at'], unique=False)
    op.create_table(
        'releases',
        sa.Column('id', sa.String(length=48), nullable=False),
        sa.Column('generator', sa.String(length=64), nullable=False),
        sa.Column('request_digest', sa.String(length=80), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('mac', sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('releases')
    op.drop_index(op.f('ix_pending_enrollments_expires_at'), table_name='pending_enrollments')
    op.drop_index(op.f('ix_pending_enrollments_account_id'), table_name='pending_enrollments')
    op.drop_table('pending_enrollments')
    op.drop_index(op.f('ix_http_nonces_expires_at'), table_name='http_nonces')
    op.drop_table('http_nonces')
