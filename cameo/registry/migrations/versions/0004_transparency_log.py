"""transparency log: audit entries appended without a shared row (a database-assigned ``seq``, a
random ``entry_id``, a per-entry MAC), their leaf index in the Merkle tree, the tree's nodes and the
signed checkpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        # rebuilt with AUTOINCREMENT: a seq is never handed out twice, even after the tail is deleted
        with op.batch_alter_table('audit_log', recreate='always', table_kwargs={'sqlite_autoincrement': True}) as b:
            b.alter_column('seq', existing_type=sa.Integer(), autoincrement=True)
            b.add_column(sa.Column('entry_id', sa.String(length=40), nullable=True))
            b.add_column(sa.Column('leaf_index', sa.Integer(), nullable=True))
            b.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=True)
    else:
        op.execute("CREATE SEQUENCE audit_log_seq_seq OWNED BY audit_log.seq")
        op.execute("SELECT setval('audit_log_seq_seq', COALESCE((SELECT max(seq) FROM audit_log), 0) + 1, false)")
        op.execute("ALTER TABLE audit_log ALTER COLUMN seq SET DEFAULT nextval('audit_log_seq_seq')")
        op.add_column('audit_log', sa.Column('entry_id', sa.String(length=40), nullable=True))
        op.add_column('audit_log', sa.Column('leaf_index', sa.Integer(), nullable=True))
        op.alter_column('audit_log', 'prev_hash', existing_type=sa.String(length=64), nullable=True)
    # entries of the hash chain keep it (prev_hash set); their id names their old sequence number
    op.execute("UPDATE audit_log SET entry_id = 'legacy_' || CAST(seq AS VARCHAR(20))")
    with op.batch_alter_table('audit_log') as b:
        b.alter_column('entry_id', existing_type=sa.String(length=40), nullable=False)
        b.create_unique_constraint('uq_audit_log_entry_id', ['entry_id'])
        b.create_unique_constraint('uq_audit_log_leaf_index', ['leaf_index'])
    op.create_index('ix_audit_pending', 'audit_log', ['seq'], sqlite_where=sa.text('leaf_index IS NULL'),
                    postgresql_where=sa.text('leaf_index IS NULL'))
    op.create_table(
        'log_nodes',
        sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('idx', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('hash', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('level', 'idx'),
    )
    op.create_table(
        'log_checkpoints',
        sa.Column('tree_size', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('root_hash', sa.String(length=64), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('log_key', sa.Text(), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('tree_size'),
    )


def downgrade() -> None:
    op.drop_table('log_checkpoints')
    op.drop_table('log_nodes')
    op.drop_index('ix_audit_pending', table_name='audit_log')
    # entries written since cannot rejoin the hash chain: the downgrade keeps only the schema shape
    with op.batch_alter_table('audit_log') as b:
        b.drop_constraint('uq_audit_log_leaf_index', type_='unique')
        b.drop_constraint('uq_audit_log_entry_id', type_='unique')
        b.drop_column('leaf_index')
        b.drop_column('entry_id')
