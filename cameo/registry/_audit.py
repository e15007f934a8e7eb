"""The audit log: typed events, appended in the same transaction as the change they describe,
hash-chained, with the head kept in its own row so a truncated tail is caught too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from consent import GENESIS, encode_detail, entry_hash

from ._events import EventTag, Outcome, event_name, outcome_of
from ._models import AuditEntry, AuditHead
from ._trust import trust_of


def ts(now: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-22T01:36:08.123456Z``."""
    if now.tzinfo is not timezone.utc:
        now = now.astimezone(timezone.utc)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (now.year, now.month, now.day, now.hour, now.minute,
                                                     now.second, now.microsecond)


_head_t: Table = AuditHead.__table__  # type: ignore[assignment]
_log_t: Table = AuditEntry.__table__  # type: ignore[assignment]
_HEAD = select(_head_t.c.seq, _head_t.c.hash).where(_head_t.c.id == 1).with_for_update()
_INSERT = insert(_log_t)
_ADVANCE = update(_head_t).where(_head_t.c.id == 1)


def serialise(session: Session) -> None:
    """Take the registry-wide write lock now rather than at the first audit append: for a check
    followed by a write that must not interleave with another process's (is this face someone
    else's? then seal). SQLite transactions here already start with BEGIN IMMEDIATE; on
    PostgreSQL this is the audit head's row lock, which every write takes anyway."""
    session.connection().execute(_HEAD).one()


def init_audit(session: Session) -> None:
    if session.get(AuditHead, 1) is None:
        session.add(AuditHead(id=1, seq=0, hash=GENESIS))
        session.flush()


class RawAppender:
    """Appends through a DB-API cursor of the caller's transaction (the gate's hot path): the same
    entry and hash as :func:`append`, without SQLAlchemy's per-statement overhead."""

    def __init__(self, dialect: str, key: bytes) -> None:
        from sqlalchemy import bindparam, literal_column

        from ._db import compile_positional

        one: Any = literal_column("1")

        self._key = key
        head = select(_head_t.c.seq, _head_t.c.hash).where(_head_t.c.id == one)
        self._head = compile_positional(head.with_for_update() if dialect == "postgresql" else head, dialect).sql
        cols = ("seq", "ts", "event", "actor", "subject", "detail", "prev_hash", "hash")
        ins = compile_positional(insert(_log_t).values({c: bindparam(c) for c in cols}), dialect)
        assert ins.order == cols
        self._insert = ins.sql
        adv = compile_positional(update(_head_t).where(_head_t.c.id == one)
                                 .values(seq=bindparam("seq"), hash=bindparam("hash")), dialect)
        assert adv.order == ("seq", "hash")
        self._advance = adv.sql

    def __call__(self, cur: Any, event: EventTag | str, *, now: datetime, outcome: Outcome | None = None,
                 actor: str | None = None, subject: str | None = None, detail: dict[str, Any] | None = None) -> int:
        event = event_name(event, outcome)
        cur.execute(self._head)
        seq0, prev = cur.fetchone()
        seq, stamp, body = seq0 + 1, ts(now), encode_detail(detail or {})
        h = entry_hash(prev, key=self._key, seq=seq, ts=stamp, event=event, actor=actor, subject=subject,
                       detail=body)
        cur.execute(self._insert, (seq, stamp, event, actor, subject, body, prev, h))
        cur.execute(self._advance, (seq, h))
        return seq


def append(session: Any, event: EventTag | str, *, now: datetime, outcome: Outcome | None = None,
           actor: str | None = None, subject: str | None = None, detail: dict[str, Any] | None = None) -> int:
    """Append one entry; returns its sequence number. Serialised by the head row's lock.

    ``event`` is an :class:`EventTag` (the outcome, if any, a field: stored as ``tag:outcome``).
    ``session`` is an ORM Session or a Core Connection of the caller's transaction."""
    event = event_name(event, outcome)
    key = trust_of(session).audit_key
    conn = session.connection() if isinstance(session, Session) else session
    seq0, prev = conn.execute(_HEAD).one()
    seq = seq0 + 1
    stamp = ts(now)
    body = encode_detail(detail or {})
    h = entry_hash(prev, key=key, seq=seq, ts=stamp, event=event, actor=actor, subject=subject, detail=body)
    conn.execute(_INSERT, {"seq": seq, "ts": stamp, "event": event, "actor": actor, "subject": subject,
                           "detail": body, "prev_hash": prev, "hash": h})
    conn.execute(_ADVANCE, {"seq": seq, "hash": h})
    return seq


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad_seq": self.first_bad, "problem": self.problem}


def verify_chain(session: Session) -> ChainReport:
    """Recompute every keyed hash from the stored fields; names the first entry that does not fit.
    Needs the registry's audit key: a chain recomputed by someone without it does not verify."""
    key = trust_of(session).audit_key
    prev, expect_seq, n = GENESIS, 1, 0
    rows = session.execute(select(AuditEntry.seq, AuditEntry.ts, AuditEntry.event, AuditEntry.actor,
                                  AuditEntry.subject, AuditEntry.detail, AuditEntry.prev_hash,
                                  AuditEntry.hash).order_by(AuditEntry.seq))
    for seq, stamp, event, actor, subject, detail, prev_hash, h in rows:
        n += 1
        if seq != expect_seq:
            return ChainReport(False, n, seq, f"entry {seq} follows entry {expect_seq - 1}: entries missing or inserted")
        if prev_hash != prev:
            return ChainReport(False, n, seq, f"entry {seq} does not link to the entry before it")
        try:
            json.loads(detail)
            recomputed = entry_hash(prev, key=key, seq=seq, ts=stamp, event=event, actor=actor, subject=subject, detail=detail)
        except (ValueError, TypeError):
            return ChainReport(False, n, seq, f"entry {seq} is malformed")
        if recomputed != h:
            return ChainReport(False, n, seq, f"entry {seq} was altered after it was written")
        prev, expect_seq = h, seq + 1
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    if head is None:
        return ChainReport(False, n, None, "the chain head is missing")
    if head.seq < expect_seq - 1:
        return ChainReport(False, n, head.seq + 1, f"entries after {head.seq} were added behind the chain head")
    if head.seq != expect_seq - 1 or head.hash != prev:
        return ChainReport(False, n, expect_seq, "the log ends before its recorded head: entries were removed")
    return ChainReport(True, n, None, None)


def entries_for(session: Session, subject: str) -> list[dict[str, Any]]:
    rows = session.execute(select(AuditEntry).where(AuditEntry.subject == subject).order_by(AuditEntry.seq)).scalars()
    return [{"seq": r.seq, "ts": r.ts, "event": r.event, "outcome": outcome_of(r.event), "actor": r.actor,
             "detail": json.loads(r.detail)}
            for r in rows]
