"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL, and go down and
up again cleanly. Each case runs on a database of its own (a fresh SQLite file, a throwaway
PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import throwaway_pg_database
from sqlalchemy import inspect

from cameo.registry._db import _alembic_config, make_engine, require_schema, upgrade
from cameo._errors import NotInitialised
from cameo.registry._models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield eng
        eng.dispose()
    else:
        with throwaway_pg_database() as url:
            eng = make_engine(url)
            yield eng
            eng.dispose()


def _diff(engine: object) -> list[object]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, Base.metadata))


def _revision(engine: object) -> str | None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return MigrationContext.configure(conn).get_current_revision()


def _tables(engine: object) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_an_empty_database_is_not_a_registry(fresh_engine):
    with pytest.raises(NotInitialised):
        require_schema(fresh_engine)


def test_the_migrations_produce_exactly_the_models_schema(fresh_engine):
    upgrade(fresh_engine)
    assert _diff(fresh_engine) == []
    assert _tables(fresh_engine) == set(Base.metadata.tables) | {"alembic_version"}
    head = ScriptDirectory.from_config(_alembic_config(fresh_engine)).get_current_head()
    assert _revision(fresh_engine) == head
    require_schema(fresh_engine)


def test_the_comparison_sees_a_difference_when_there_is_one(fresh_engine):
    # the positive control for the test above: drop an index and the comparison reports it
    upgrade(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_audit_subject")
    assert any("ix_audit_subject" in repr(d) for d in _diff(fresh_engine))


def test_upgrade_is_idempotent(fresh_engine):
    upgrade(fresh_engine)
    upgrade(fresh_engine)
    assert _diff(fresh_engine) == []


def test_down_to_base_and_up_again(fresh_engine):
    upgrade(fresh_engine)
    command.downgrade(_alembic_config(fresh_engine), "base")
    assert _tables(fresh_engine) <= {"alembic_version"}
    assert _revision(fresh_engine) is None
    upgrade(fresh_engine)
    assert _diff(fresh_engine) == []
