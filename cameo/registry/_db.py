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
the transaction commits. The database file is created 0600 before SQLite first opens it (SQLite
gives its ``-journal`` the mode of the database file), and ``cameo init`` narrows an existing one
to 0600 (:func:`restrict_sqlite_file`). PostgreSQL: READ COMMITTED; the few rows that must be
serialised (grant use counters, the audit head) are taken with row locks.
"""

from __future__ import annotations

import contextlib
import weakref
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from .._errors import CameoError, NotInitialised

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseError(CameoError):
    """The database could not be reached or refused an operation."""


# SQLAlchemy 2.1 reports CursorResult.rowcount only for UPDATE and DELETE unless asked to keep it;
# the gate's single-use check reads the rowcount of an INSERT ... ON CONFLICT DO NOTHING (on
# PostgreSQL it was -1: every release was denied as "already used").
_ROWCOUNT = {"preserve_rowcount": True}


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another backend, an in-memory or a ``file:`` URI database)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except (SQLAlchemyError, ValueError):
        return None
    db = u.database
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _create_private(path: Path) -> None:
    """Create an empty file 0600 (whatever the umask) unless it exists; SQLite then opens it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except (FileExistsError, FileNotFoundError):
        return  # there already, or no folder (SQLite's own error follows)
    os.close(fd)


def restrict_sqlite_file(url: str) -> None:
    """chmod 0600 the SQLite database file of ``url`` and its journal, if they exist."""
    path = sqlite_path(url)
    if path is None:
        return
    for p in (path, path.with_name(path.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, 0o600)


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"isolation_level": None, "timeout": 30},
                                   execution_options=_ROWCOUNT)
            path = sqlite_path(url)

            if path is not None:
                @event.listens_for(engine, "do_connect")
                def _private_file(_dialect, _rec, _cargs, _cparams):  # type: ignore[no-untyped-def]
                    _create_private(path)  # before SQLite creates it with the umask's mode (0644)

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


_TRUST: weakref.WeakKeyDictionary[Engine, Any] = weakref.WeakKeyDictionary()


def bind_trust(engine: Engine, trust: Any) -> None:
    """Attach the registry's root of trust (:class:`cameo.registry._trust.RegistryTrust`) to an engine:
    every transaction opened on it carries it in ``session.info["trust"]``."""
    _TRUST[engine] = trust


def trust_for(engine: Engine) -> Any:
    return _TRUST.get(engine)


@contextlib.contextmanager
def transaction(engine: Engine, trust: Any = None) -> Iterator[Session]:
    """One transaction: commit if the block returns, roll back if it raises. Errors are wrapped.
    The session carries the engine's trust (or ``trust``) in ``session.info["trust"]``."""
    session = Session(engine, expire_on_commit=False, info={"trust": trust or _TRUST.get(engine)})
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


class Stmt(NamedTuple):
    """A statement compiled once for the driver (its parameters positional, in ``order``)."""

    sql: str
    order: tuple[str, ...]

    def args(self, **values: Any) -> tuple[Any, ...]:
        return tuple(values[k] for k in self.order)


def compile_positional(stmt: Any, dialect_name: str) -> Stmt:
    """Compile a Core statement built from the table definitions in ``cameo.registry._models`` to the
    driver's SQL with positional parameters: the hot path runs it on the DB-API cursor without
    SQLAlchemy's per-statement layers, but its table and column names come from one place."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import psycopg

        dialect: Any = psycopg.dialect(paramstyle="format")
    else:
        from sqlalchemy.dialects import sqlite

        dialect = sqlite.dialect(paramstyle="qmark")
    c = stmt.compile(dialect=dialect)
    return Stmt(str(c), tuple(c.positiontup or ()))
