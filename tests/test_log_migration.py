"""Migration 0004 on a registry with history: entries written under the hash chain keep verifying
as a chain, new entries are appended beside them with their MAC and a new seq (never one handed out
before), and the integrator takes the old and the new into the transparency log. SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from alembic import command
from conftest import throwaway_pg_database
from sqlalchemy import text

from cameo.registry import Integrator, LogKeys
from cameo.registry import _audit as audit
from cameo.registry._db import _alembic_config, make_engine, transaction
from consent import GENESIS, NoteSigner, SigningKey, entry_hash

KEY = bytes(range(32))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A database at revision 0003 holding three hash-chained entries and their head."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        ctx = None
    else:
        ctx = throwaway_pg_database()
        eng = make_engine(ctx.__enter__())
    command.upgrade(_alembic_config(eng), "0003")
    prev = GENESIS
    with eng.begin() as conn:
        for seq in (1, 2, 3):
            f = {"seq": seq, "ts": "2026-01-01T00:00:0%d.000000Z" % seq, "event": "registry:key:add", "actor": None,
                 "subject": None, "detail": '{"n":%d}' % seq}
            h = entry_hash(prev, key=KEY, **f)
            conn.execute(text("INSERT INTO audit_log (seq, ts, event, actor, subject, detail, prev_hash, hash) "
                              "VALUES (:seq, :ts, :event, :actor, :subject, :detail, :prev, :h)"), {**f, "prev": prev, "h": h})
            prev = h
        conn.execute(text("INSERT INTO log_head (id, seq, hash) VALUES (1, 3, :h)"), {"h": prev})
        conn.execute(text("INSERT INTO registry_meta (key, value) VALUES ('registry_id', 'cameo-registry-old')"))
    yield eng
    eng.dispose()
    if ctx is not None:
        ctx.__exit__(None, None, None)


def test_the_old_chain_migrates_into_the_transparency_log(old_engine):
    eng = old_engine
    command.upgrade(_alembic_config(eng), "head")
    trust = SimpleNamespace(audit_key=KEY)
    signer = NoteSigner("cameo-registry-old", SigningKey.generate())
    keys = LogKeys("cameo-registry-old", signer, (signer.verifier,))
    with transaction(eng, trust) as s:
        assert audit.verify_chain(s, keys.verifiers).ok
        ids = [audit.append(s, "registry:key:add", now=NOW, detail={"new": i}) for i in range(2)]
    with eng.connect() as conn:
        rows = conn.execute(text("SELECT seq, entry_id, prev_hash IS NOT NULL FROM audit_log ORDER BY seq")).all()
    assert [(r[0], r[2]) for r in rows] == [(1, True), (2, True), (3, True), (4, False), (5, False)]
    assert [r[1] for r in rows][:3] == ["legacy_1", "legacy_2", "legacy_3"] and [r[1] for r in rows][3:] == ids
    assert Integrator(eng, keys).run_once().integrated == 5
    with transaction(eng, trust) as s:
        rep = audit.verify_chain(s, keys.verifiers)
    assert rep.ok and rep.tree_size == 5 and rep.checkpoints == 1, rep
    with eng.begin() as conn:  # an old entry edited after the migration is still caught by its chain
        conn.execute(text("UPDATE audit_log SET detail = :d WHERE seq = 2"), {"d": '{"n":9}'})
    with transaction(eng, trust) as s:
        rep = audit.verify_chain(s, keys.verifiers)
    assert not rep.ok and rep.first_bad == 2
