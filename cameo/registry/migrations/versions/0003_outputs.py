"""outputs: each generated output's record (watermark identifier, digest, claim, perceptual hashes)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'outputs',
        sa.Column('id', sa.String(length=8), nullable=False),
        sa.Column('digest', sa.String(length=80), nullable=False),
        sa.Column('media_type', sa.String(length=64), nullable=False),
        sa.Column('generator', sa.String(length=64), nullable=False),
        sa.Column('request_digest', sa.String(length=80), nullable=False),
        sa.Column('manifest_label', sa.String(length=256), nullable=True),
        sa.Column('claim', sa.Text(), nullable=False),
        sa.Column('phash', sa.Text(), nullable=True),
        sa.Column('envelope', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_outputs_digest'), 'outputs', ['digest'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_outputs_digest'), table_name='outputs')
    op.drop_table('outputs')
