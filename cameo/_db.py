"""Engines, transactions and migrations.

The caller owns the Session: library functions take one and never commit. The CLI opens one
transaction per command with :func:`transaction`.

SQLite: the rollback journal (``journal_mode=DELETE``, SQLite's default) with ``synchronous=EXTRA``
(every commit durable: a commit in this mode is the journal's deletion, and FULL does not sync the
directory after it, so a power cut just after COMMIT could bring the journal back and roll a
consumed token use or an audit entry back; EXTRA syncs it), foreign keys on, ``secure_delete`` on
(freed pages are zeroed: a destroyed data key does not linger in the file), and every transaction
starts with ``BEGIN IMMEDIATE`` so that writers across processes serialise at the start of a
decision rather than failing at its end. Not WAL: every transaction here writes (audit entries), so
WAL's concurrent readers buy nothing, and WAL keeps old page images (a destroyed wrapped data key,
say) in the ``-wal`` file until a checkpoint, while a rollback journal's pre-images are gone when
the transaction commits. PostgreSQL: READ COMMITTED; the few rows that must be serialised (grant use
counters, the audit head) are taken with row locks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from ._errors import CameoError, NotInitialised

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseError(CameoError):
    """The database could not be reached or refused an operation."""


# SQLAlchemy 2.1 reports CursorResult.rowcount only for UPDATE and DELETE unless asked to keep it;
# the gate's single-use check reads the rowcount of an INSERT ... ON CONFLICT DO NOTHING (on
# PostgreSQL it was -1: every release was denied as "already used").
_ROWCOUNT = {"preserve_rowcount": True}


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"isolation_level": None, "timeout": 30},
                                   execution_options=_ROWCOUNT)

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=DELETE")
                cur.execute("PRAGMA synchronous=EXTRA")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA secure_delete=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn):  # type: ignore[no-untyped-def]
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        return create_engine(url, pool_pre_ping=True, execution_options=_ROWCOUNT)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise DatabaseError(f"cannot use database URL ({type(e).__name__})") from e


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One transaction: commit if the block returns, roll back if it raises. Errors are wrapped."""
    session = Session(engine, expire_on_commit=False)
    try:
        with session.begin():
            yield session
    except DBAPIError as e:
        raise DatabaseError(f"database error: {type(e.orig).__name__ if e.orig else type(e).__name__}") from e
    except SQLAlchemyError as e:
        raise DatabaseError(f"database error: {type(e).__name__}") from e
    finally:
        session.close()


def _alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), "head")
    except SQLAlchemyError as e:
        raise DatabaseError(f"migration failed: {type(e).__name__}") from e


def require_schema(engine: Engine) -> None:
    db = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and db and db != ":memory:" and not Path(db).exists():
        # (connecting would create an empty file, or fail with a bare OperationalError without a home)
        raise NotInitialised("no cameo registry here: run `cameo init` first")
    try:
        if not inspect(engine).has_table("log_head"):
            raise NotInitialised("no cameo registry in this database: run `cameo init` first")
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot open the database ({type(e).__name__})") from e
