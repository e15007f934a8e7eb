"""The audit log: typed events, appended in the same transaction as the change they describe.

Each entry carries a keyed MAC from the moment it is written and is appended with one INSERT (no
shared head row: concurrent decisions do not queue behind each other). Its place in history is
fixed by the transparency log (:mod:`cameo.registry._log`), which integrates entries into a Merkle
tree and signs checkpoints over it."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from consent import GENESIS, encode_detail, entry_hash, entry_mac, log_entry_bytes

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
_LOCK = select(_head_t.c.id).where(_head_t.c.id == 1).with_for_update()
_INSERT = insert(_log_t)


def serialise(session: Session) -> None:
    """Take the registry-wide write lock now: for a check followed by a write that must not
    interleave with another process's (is this face someone else's? then seal). SQLite
    transactions here already start with BEGIN IMMEDIATE; on PostgreSQL this is the row lock of
    the one ``log_head`` row, which only such writers take (the gate's decisions append to the log
    without it)."""
    session.connection().execute(_LOCK).one()


def init_audit(session: Session) -> None:
    if session.get(AuditHead, 1) is None:
        session.add(AuditHead(id=1, seq=0, hash=GENESIS))
        session.flush()


def new_entry_id() -> str:
    """``ent_`` + 32 random hex digits: named by proofs, covered by the entry's MAC (so a copied
    entry is not a second entry)."""
    return "ent_" + secrets.token_hex(16)


class RawAppender:
    """Appends through a DB-API cursor of the caller's transaction (the gate's hot path): the same
    entry and MAC as :func:`append`, without SQLAlchemy's per-statement overhead. One INSERT; no
    row is shared with any other writer."""

    def __init__(self, dialect: str, key: bytes) -> None:
        from sqlalchemy import bindparam

        from ._db import compile_positional

        self._key = key
        cols = ("entry_id", "ts", "event", "actor", "subject", "detail", "hash")
        # inline: no RETURNING of the new seq (nothing reads it; it would be a result row per entry)
        ins = compile_positional(insert(_log_t).values({c: bindparam(c) for c in cols}).inline(), dialect)
        assert ins.order == cols
        self._insert = ins.sql

    def __repr__(self) -> str:  # the audit key is not for logs
        return "RawAppender()"

    def __call__(self, cur: Any, event: EventTag | str, *, now: datetime, outcome: Outcome | None = None,
                 actor: str | None = None, subject: str | None = None, detail: dict[str, Any] | None = None) -> str:
        """Returns the new entry's id."""
        event = event_name(event, outcome)
        eid, stamp, body = new_entry_id(), ts(now), encode_detail(detail or {})
        mac = entry_mac(self._key, log_entry_bytes(entry_id=eid, ts=stamp, event=event, actor=actor,
                                                   subject=subject, detail=body))
        cur.execute(self._insert, (eid, stamp, event, actor, subject, body, mac))
        return eid


def append(session: Any, event: EventTag | str, *, now: datetime, outcome: Outcome | None = None,
           actor: str | None = None, subject: str | None = None, detail: dict[str, Any] | None = None) -> str:
    """Append one entry; returns its entry id. One INSERT: nothing shared is locked.

    ``event`` is an :class:`EventTag` (the outcome, if any, a field: stored as ``tag:outcome``).
    ``session`` is an ORM Session or a Core Connection of the caller's transaction."""
    event = event_name(event, outcome)
    key = trust_of(session).audit_key
    conn = session.connection() if isinstance(session, Session) else session
    eid, stamp, body = new_entry_id(), ts(now), encode_detail(detail or {})
    mac = entry_mac(key, log_entry_bytes(entry_id=eid, ts=stamp, event=event, actor=actor, subject=subject,
                                         detail=body))
    conn.execute(_INSERT, {"entry_id": eid, "ts": stamp, "event": event, "actor": actor, "subject": subject,
                           "detail": body, "hash": mac})
    return eid


@dataclass(frozen=True)
class ChainReport:
    """What ``audit verify`` found: every entry's MAC (or, before migration 0004, its place in the
    hash chain), and the transparency log (see :func:`cameo.registry._log.verify_log`)."""

    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    tree_size: int = 0
    pending: int = 0
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad_seq": self.first_bad, "problem": self.problem,
                "tree_size": self.tree_size, "pending": self.pending, "checkpoints": self.checkpoints}


def verify_entries(session: Session) -> ChainReport:
    """Recompute every entry's keyed MAC from its stored fields (the hash chain for entries from
    before migration 0004); names the first entry that does not fit. Needs the registry's audit
    key: an entry forged by someone without it does not verify. Deletions and reordering are the
    transparency log's to catch (:func:`cameo.registry._log.verify_log`)."""
    key = trust_of(session).audit_key
    prev, n, legacy_seq, legacy_done = GENESIS, 0, 0, False
    rows = session.execute(select(AuditEntry.seq, AuditEntry.entry_id, AuditEntry.ts, AuditEntry.event,
                                  AuditEntry.actor, AuditEntry.subject, AuditEntry.detail, AuditEntry.prev_hash,
                                  AuditEntry.hash).order_by(AuditEntry.seq))
    for seq, eid, stamp, event, actor, subject, detail, prev_hash, h in rows:
        n += 1
        try:
            json.loads(detail)
            if prev_hash is not None:  # written before 0004: the keyed hash chain
                if legacy_done:
                    return ChainReport(False, n, seq, f"entry {seq} claims a place in the old hash chain after it ended")
                if seq != legacy_seq + 1:
                    return ChainReport(False, n, seq, f"entry {seq} follows entry {legacy_seq}: entries missing or inserted")
                if prev_hash != prev:
                    return ChainReport(False, n, seq, f"entry {seq} does not link to the entry before it")
                want = entry_hash(prev, key=key, seq=seq, ts=stamp, event=event, actor=actor, subject=subject,
                                  detail=detail)
                prev, legacy_seq = want, seq
            else:
                legacy_done = True
                want = entry_mac(key, log_entry_bytes(entry_id=eid, ts=stamp, event=event, actor=actor,
                                                      subject=subject, detail=detail))
        except (ValueError, TypeError):
            return ChainReport(False, n, seq, f"entry {seq} is malformed")
        if not hmac.compare_digest(want, h or ""):
            return ChainReport(False, n, seq, f"entry {seq} was altered after it was written")
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    if head is None:
        return ChainReport(False, n, None, "the registry's head row is missing")
    if (head.seq, head.hash) != (legacy_seq, prev):
        return ChainReport(False, n, legacy_seq + 1, "the old hash chain does not end at its recorded head: "
                           "entries were removed")
    return ChainReport(True, n, None, None)


def verify_chain(session: Session, log_verifiers: Any = None) -> ChainReport:
    """``audit verify``: every entry (:func:`verify_entries`) and the transparency log over them
    (every leaf matches its entry, leaves are contiguous, every stored checkpoint is signed by a
    log key and consistent with the latest). ``log_verifiers``: the log's verifier keys (active and
    retired), from the home's key files."""
    from ._log import verify_log

    rep = verify_entries(session)
    if not rep.ok:
        return rep
    return verify_log(session, rep, None if log_verifiers is None else list(log_verifiers))


def entries_for(session: Session, subject: str) -> list[dict[str, Any]]:
    rows = session.execute(select(AuditEntry).where(AuditEntry.subject == subject).order_by(AuditEntry.seq)).scalars()
    return [{"seq": r.seq, "entry_id": r.entry_id, "leaf_index": r.leaf_index, "ts": r.ts, "event": r.event,
             "outcome": outcome_of(r.event), "actor": r.actor, "detail": json.loads(r.detail)}
            for r in rows]
