"""registry lock and retrain runs

At most one active model and at most one running retrain, each kept by a
partial unique index (SQLite and PostgreSQL both have them); the retrain's
heartbeat, stage, held-out speakers and comparison on training_runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:18:34.847879
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index('uq_models_one_active', ['status'], unique=True, sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trigger', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('stage', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('worker', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('active_version', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('held_out_speakers', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('comparison', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.create_index('uq_training_runs_one_running', ['state'], unique=True, sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"))


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_training_runs_one_running', sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"))
        batch_op.drop_column('error')
        batch_op.drop_column('comparison')
        batch_op.drop_column('held_out_speakers')
        batch_op.drop_column('active_version')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('worker')
        batch_op.drop_column('stage')
        batch_op.drop_column('trigger')

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('uq_models_one_active', sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
