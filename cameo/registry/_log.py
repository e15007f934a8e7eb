"""The transparency log over the audit entries: a Merkle tree (RFC 9162) and signed checkpoints
(C2SP signed notes under the registry's log key), after Trillian Tessera and Rekor v2.

Writers never wait for the log. A decision appends its entry with one INSERT (a random entry id,
a keyed MAC, no leaf index) and commits. One **integrator** at a time (leader-elected: a
PostgreSQL advisory lock held on its connection, or an exclusive file lock beside a SQLite file)
takes the committed entries that have no leaf index in the order they were written, gives them
the next leaf indices, stores the tree's new nodes and signs a checkpoint, all in one
transaction: a batch is integrated whole or not at all, so a crash (``kill -9``) between or inside
batches loses no entry and leaves no gap; the next integrator carries on from the last checkpoint.
The unique leaf index and the primary keys of nodes and checkpoints make a second writer of the
same batch fail even if two integrators ever ran at once.

**The bound on integration delay.** While an integrator runs (:meth:`Integrator.start`), an entry
committed at time *t* is in a signed checkpoint by *t* + ``every_ms`` + *D*, where *D* is the time
one run takes to integrate everything pending then (``max_batch`` entries per checkpoint); it is
sooner once ``every_n`` entries are waiting (the backlog is counted every ``every_ms / 4``, at most
50 ms apart: one indexed count). A
standby integrator takes over within ``every_ms`` of the leader's connection or process ending.
Without a server (the CLI alone), entries wait for ``cameo audit checkpoint`` (or ``audit
integrate``), which integrates whatever is pending first. Until an entry is integrated only its
MAC protects it: an edit is caught, a deletion is not. That window is what the bound limits.

Revocation never depends on the log: the gate's decisions read grant rows, not log rows.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from consent import (
    Checkpoint,
    ConsentError,
    MemoryTree,
    NoteSigner,
    NoteVerifier,
    ProofInvalid,
    consistency_path,
    inclusion_path,
    leaf_hash,
    log_entry_bytes,
    new_nodes,
    open_checkpoint,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

from .._errors import BadInput, CameoError, NotFound, NotInitialised
from ._audit import ChainReport, ts
from ._models import AuditEntry, LogCheckpoint, LogNode, Meta

_log_t: Table = AuditEntry.__table__  # type: ignore[assignment]
_node_t: Table = LogNode.__table__  # type: ignore[assignment]
_cp_t: Table = LogCheckpoint.__table__  # type: ignore[assignment]

#: the PostgreSQL advisory lock key of the integrator (any constant; "cameo-log" as 8 bytes)
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"cameo.log.integrator").digest()[:8], "big", signed=True)


class LogError(CameoError):
    """The transparency log cannot answer this (no checkpoint yet, a size it never had)."""


class LogBroken(CameoError):
    """The log's stored tree is not whole (a node is missing): altered outside cameo; ``audit
    verify`` says where."""

    exit_code = 3


class LogConflict(CameoError):
    """Another integrator wrote the same batch (the constraints refused the second): try again."""


class UnknownEntry(NotFound):
    """No audit entry has this id."""


class NotIntegrated(NotFound):
    """The entry exists but is not in a signed checkpoint yet."""


class NoCheckpoint(NotFound, LogError):
    """The log has no signed checkpoint (yet, or of the size asked for)."""


MAX_TREE_SIZE = 1 << 62  # a size beyond this is bad input, not a database error


# -- keys ------------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class LogKeys:
    """The log's signing key (where the registry's key files are) and every verifier key it has
    used: retired keys still verify the checkpoints they signed, never sign."""

    origin: str
    signer: NoteSigner | None
    verifiers: tuple[NoteVerifier, ...]

    def __repr__(self) -> str:
        return f"LogKeys({self.origin!r}, {len(self.verifiers)} verifier(s))"


def log_origin(session: Session | Connection) -> str:
    """The log's origin line (and its key's name): the registry's id."""
    rid = session.execute(select(Meta.value).where(Meta.key == "registry_id")).scalar_one_or_none()
    if rid is None:
        raise LogError("the registry has no id yet: run `cameo init`")
    return str(rid)


def log_keys(home: Any, origin: str) -> LogKeys:
    """From the home's key files: ``registry/log.key`` and ``registry/retired-log-keys.json``."""
    active = home.log_signing_key()
    signer = NoteSigner(origin, active)
    retired = [NoteVerifier(origin, k) for k in home.retired_log_keys()]
    return LogKeys(origin, signer, (signer.verifier, *retired))


# -- the integrator ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Integration:
    """What one run did: whether it was the leader, how many entries it integrated, the tree size."""

    leader: bool
    integrated: int
    tree_size: int

    def as_dict(self) -> dict[str, Any]:
        return {"leader": self.leader, "integrated": self.integrated, "tree_size": self.tree_size}


def _node_source(conn: Connection, cache: dict[tuple[int, int], bytes]) -> Callable[[int, int], bytes]:
    q = select(_node_t.c.hash).where(_node_t.c.level == bindparam("l"), _node_t.c.idx == bindparam("i"))

    def node(level: int, idx: int) -> bytes:
        h = cache.get((level, idx))
        if h is None:
            got = conn.execute(q, {"l": level, "i": idx}).scalar_one_or_none()
            if got is None:
                raise LogBroken(f"the log's tree is missing its node ({level}, {idx}): run `cameo audit verify`")
            h = cache[(level, idx)] = bytes(got)
        return h

    return node


def _tree_size(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(_cp_t.c.tree_size), 0))).scalar_one())


def integrate_batch(conn: Connection, signer: NoteSigner, *, max_batch: int, now: datetime,
                    sign_empty: bool = False) -> int:
    """Integrate up to ``max_batch`` pending entries in the caller's transaction and sign the
    checkpoint of the grown tree; returns how many. Only the leader calls this."""
    size = _tree_size(conn)
    rows = conn.execute(select(_log_t.c.seq, _log_t.c.entry_id, _log_t.c.ts, _log_t.c.event, _log_t.c.actor,
                               _log_t.c.subject, _log_t.c.detail)
                        .where(_log_t.c.leaf_index.is_(None)).order_by(_log_t.c.seq).limit(max_batch)).all()
    if not rows and not (sign_empty and size == 0 and
                         conn.execute(select(_cp_t.c.tree_size).limit(1)).first() is None):
        return 0
    cache: dict[tuple[int, int], bytes] = {}
    node = _node_source(conn, cache)
    nodes: list[dict[str, Any]] = []
    leaves: list[dict[str, Any]] = []
    for i, (seq, eid, stamp, event, actor, subject, detail) in enumerate(rows):
        idx = size + i
        lh = leaf_hash(log_entry_bytes(entry_id=eid, ts=stamp, event=event, actor=actor, subject=subject,
                                       detail=detail))
        for level, j, h in new_nodes(idx, lh, node):
            cache[(level, j)] = h
            nodes.append({"level": level, "idx": j, "hash": h})
        leaves.append({"s": seq, "li": idx})
    if leaves:
        res = conn.execute(update(_log_t).where(_log_t.c.seq == bindparam("s"), _log_t.c.leaf_index.is_(None))
                           .values(leaf_index=bindparam("li")), leaves)
        if res.rowcount not in (-1, len(leaves)):
            raise LogConflict("another integrator integrated these entries meanwhile")
        conn.execute(insert(_node_t), nodes)
    new_size = size + len(rows)
    root = root_hash(node, new_size)
    note = Checkpoint(signer.name, new_size, root).sign(signer)
    conn.execute(insert(_cp_t).values(tree_size=new_size, root_hash=root.hex(), note=note,
                                      log_key=signer.verifier.encode(), created_at=ts(now)))
    return len(rows)


class _Leadership:
    """Who may integrate: a PostgreSQL session advisory lock on the integrator's own connection
    (released by PostgreSQL when that connection ends, however it ends), or an exclusive
    ``flock`` on ``<database file>.integrator.lock`` for SQLite (released by the kernel when the
    process ends)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._fd: int | None = None
        self._pg = engine.dialect.name == "postgresql"
        db = engine.url.database
        self._path = (Path(db + ".integrator.lock") if not self._pg and db and db != ":memory:"
                      and not db.startswith("file:") else None)

    @property
    def held(self) -> bool:
        return self._conn is not None if self._pg else (self._fd is not None or self._path is None)

    def acquire(self) -> bool:
        if self.held:
            return True
        if self._pg:
            conn = self._engine.connect()
            try:
                got = bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({ADVISORY_KEY})").scalar())
                conn.commit()
            except Exception:
                conn.close()
                raise
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        if self._path is None:
            return True
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A transaction on the leader's connection (PostgreSQL) or a fresh one (SQLite)."""
        if self._pg:
            assert self._conn is not None
            with self._conn.begin():
                yield self._conn
        else:
            with self._engine.begin() as conn:
                yield conn

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
                conn.commit()
            with contextlib.suppress(Exception):
                conn.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock

    def lost(self) -> None:
        """The leader's connection failed: drop it (PostgreSQL ends the lock with it)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()


class Integrator:
    """Integrates pending audit entries into the transparency log and signs checkpoints.

    ``run_once()`` integrates everything pending (if this integrator is, or can become, the
    leader) and returns an :class:`Integration`; ``start()`` runs it on a background thread: a
    checkpoint every ``every_n`` entries or ``every_ms`` milliseconds, whichever comes first
    (see the module docstring for the bound); ``stop()`` ends the thread and gives up leadership.
    Build one with :meth:`for_home` (``cameo serve``) or from an engine and a :class:`LogKeys`."""

    def __init__(self, engine: Engine, keys: LogKeys, *, every_n: int = 256, every_ms: int = 500,
                 max_batch: int = 4096, clock: Callable[[], datetime] | None = None) -> None:
        if keys.signer is None:
            raise NotInitialised("the log key is not on this host: only the registry host integrates")
        if every_n < 1 or every_ms < 1 or max_batch < 1:
            raise ValueError("every_n, every_ms and max_batch are positive")
        self._engine = engine
        self._signer = keys.signer
        self.every_n, self.every_ms, self.max_batch = every_n, every_ms, max_batch
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lead = _Leadership(engine)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.last_error: str | None = None

    @classmethod
    def for_home(cls, home: Any, **kw: Any) -> Integrator:
        from ._app import engine_for

        eng = engine_for(home)
        with eng.connect() as conn:
            origin = log_origin(conn)
        return cls(eng, log_keys(home, origin), **kw)

    def __repr__(self) -> str:
        return f"Integrator({self._engine.dialect.name}, every_n={self.every_n}, every_ms={self.every_ms})"

    @property
    def is_leader(self) -> bool:
        return self._lead.held

    def run_once(self, *, sign_empty: bool = False) -> Integration:
        """Integrate every entry pending now (several checkpoints if more than ``max_batch``)."""
        from sqlalchemy.exc import SQLAlchemyError

        from ._db import DatabaseError

        with self._mutex:
            if not self._lead.acquire():
                return Integration(False, 0, -1)
            total = 0
            try:
                while True:
                    with self._lead.connection() as conn:
                        n = integrate_batch(conn, self._signer, max_batch=self.max_batch, now=self._clock(),
                                            sign_empty=sign_empty and total == 0)
                        size = _tree_size(conn)
                    total += n
                    if n < self.max_batch:
                        return Integration(True, total, size)
            except SQLAlchemyError as e:
                self._lead.lost()
                raise DatabaseError(f"database error while integrating the log: {type(e).__name__}") from e
            finally:
                if self._thread is None:
                    self._lead.release()  # one-off runs (the CLI) do not keep leadership

    def pending(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_log_t)
                                    .where(_log_t.c.leaf_index.is_(None))).scalar_one())

    def notify(self) -> None:
        """Look at the backlog now (a writer that knows it added entries may call this)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cameo-log-integrator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        t, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        if t is not None:
            t.join(timeout)
        with self._mutex:
            self._lead.release()

    def _loop(self) -> None:
        tick = min(max(self.every_ms / 4000.0, 0.005), 0.05)
        last = 0.0
        while not self._stop.is_set():
            try:
                due = time.monotonic() - last >= self.every_ms / 1000.0
                # (a standby only tries for the lock when due: it does not count the backlog)
                if due or (self._lead.held and self.pending() >= self.every_n):
                    self.run_once(sign_empty=True)
                    last = time.monotonic()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - keep integrating; the error is kept for the operator
                self.last_error = f"{type(e).__name__}: {e}"
            self._wake.wait(tick)
            self._wake.clear()


# -- reading the log ----------------------------------------------------------------------------------
def _hex(b: bytes) -> str:
    return b.hex()


def _checkpoint_row(session: Session | Connection, size: int | None) -> Any:
    q = select(_cp_t.c.tree_size, _cp_t.c.root_hash, _cp_t.c.note, _cp_t.c.log_key, _cp_t.c.created_at)
    q = q.order_by(_cp_t.c.tree_size.desc()).limit(1) if size is None else q.where(_cp_t.c.tree_size == size)
    if size is not None and not 0 <= size < MAX_TREE_SIZE:
        raise BadInput(f"a tree size is between 0 and {MAX_TREE_SIZE - 1}")
    row = session.execute(q).one_or_none()
    if row is None:
        raise NoCheckpoint("the log has no signed checkpoint yet: run `cameo audit checkpoint`" if size is None
                           else f"the log has no signed checkpoint of size {size}")
    return row


def _checkpoint_doc(row: Any) -> dict[str, Any]:
    return {"origin": row.note.split("\n", 1)[0], "tree_size": int(row.tree_size), "root_hash": row.root_hash,
            "note": row.note, "log_key": row.log_key, "created_at": row.created_at}


def latest_checkpoint(session: Session | Connection) -> dict[str, Any]:
    """The latest signed checkpoint: ``note`` (the signed note's text), ``tree_size``,
    ``root_hash`` (hex), ``log_key`` (the verifier key, ``name+hash+base64key``), ``origin``."""
    return _checkpoint_doc(_checkpoint_row(session, None))


def checkpoint_at(session: Session | Connection, tree_size: int) -> dict[str, Any]:
    return _checkpoint_doc(_checkpoint_row(session, tree_size))


def _entry_doc(row: Any) -> dict[str, Any]:
    return {"entry_id": row.entry_id, "ts": row.ts, "event": row.event, "actor": row.actor,
            "subject": row.subject, "detail": row.detail}


def inclusion_proof(session: Session | Connection, entry_id: str, tree_size: int | None = None) -> dict[str, Any]:
    """The inclusion proof of one entry against a signed checkpoint (the latest by default):
    ``leaf_index``, ``tree_size``, ``leaf_hash``, ``hashes`` (the audit path, leaf level first,
    hex), ``root_hash``, the ``checkpoint`` it verifies against, and the ``entry`` itself (its
    canonical bytes in base64 as ``entry_bytes``: the leaf hash is SHA-256(0x00 || those bytes))."""
    row = session.execute(select(_log_t.c.entry_id, _log_t.c.ts, _log_t.c.event, _log_t.c.actor,
                                 _log_t.c.subject, _log_t.c.detail, _log_t.c.leaf_index)
                          .where(_log_t.c.entry_id == entry_id)).one_or_none()
    if row is None:
        raise UnknownEntry(f"no audit entry {entry_id!r}")
    if row.leaf_index is None:
        raise NotIntegrated(f"entry {entry_id} is not in a signed checkpoint yet: run `cameo audit checkpoint`")
    cp = _checkpoint_row(session, tree_size)
    if row.leaf_index >= cp.tree_size:
        raise NotIntegrated(f"entry {entry_id} is not in the checkpoint of size {cp.tree_size}")
    conn = session.connection() if isinstance(session, Session) else session
    node = _node_source(conn, {})
    entry = log_entry_bytes(entry_id=row.entry_id, ts=row.ts, event=row.event, actor=row.actor,
                            subject=row.subject, detail=row.detail)
    return {"entry_id": row.entry_id, "leaf_index": int(row.leaf_index), "tree_size": int(cp.tree_size),
            "leaf_hash": _hex(node(0, int(row.leaf_index))),
            "hashes": [_hex(h) for h in inclusion_path(node, int(row.leaf_index), int(cp.tree_size))],
            "root_hash": cp.root_hash, "checkpoint": _checkpoint_doc(cp), "entry": _entry_doc(row),
            "entry_bytes": base64.b64encode(entry).decode()}


def consistency_proof(session: Session | Connection, first: int, second: int) -> dict[str, Any]:
    """The proof that the tree of size ``second`` extends the tree of size ``first`` (both sizes of
    signed checkpoints): ``first_size``, ``second_size``, ``hashes`` (hex), both roots and both
    checkpoints."""
    if not 0 <= first <= second:
        raise BadInput(f"no consistency proof from size {first} to size {second} (0 <= OLD <= NEW)")
    a, b = _checkpoint_row(session, first), _checkpoint_row(session, second)
    conn = session.connection() if isinstance(session, Session) else session
    node = _node_source(conn, {})
    return {"first_size": first, "second_size": second,
            "hashes": [_hex(h) for h in consistency_path(node, first, second)],
            "first_root": a.root_hash, "second_root": b.root_hash,
            "first_checkpoint": _checkpoint_doc(a), "second_checkpoint": _checkpoint_doc(b)}


def verify_proof_document(proof: dict[str, Any], verifiers: list[NoteVerifier]) -> None:
    """Check an inclusion proof document (from :func:`inclusion_proof`) with only the log's key:
    the checkpoint's signature, the leaf hash from the entry bytes, the audit path to the root.
    Raises ProofInvalid or a ConsentError."""
    cp = open_checkpoint(proof["checkpoint"]["note"], verifiers)
    if cp.size != int(proof["tree_size"]) or cp.root.hex() != proof["root_hash"]:
        raise ProofInvalid("the proof is not against the checkpoint it carries")
    leaf = leaf_hash(base64.b64decode(proof["entry_bytes"]))
    if leaf.hex() != proof["leaf_hash"]:
        raise ProofInvalid("the leaf hash is not the entry's")
    verify_inclusion(leaf, int(proof["leaf_index"]), cp.size, [bytes.fromhex(h) for h in proof["hashes"]], cp.root)


# -- audit verify -------------------------------------------------------------------------------------
def verify_log(session: Session, entries: ChainReport, verifiers: list[NoteVerifier] | None = None) -> ChainReport:
    """Everything the log promises, from the database and the log's verifier keys: integrated
    entries hold exactly the leaf indices 0..n-1, each leaf is the hash of its entry, every stored
    node is the hash of its children, every stored checkpoint is signed by a log key (active or
    retired) and has the root of the tree's first ``tree_size`` leaves (so it is consistent with
    the latest, which is checked with an RFC 9162 consistency proof too), and the latest covers
    every integrated entry."""
    if verifiers is None:
        verifiers = list(session.info.get("log_verifiers", ()))

    def bad(seq: int | None, problem: str, **kw: int) -> ChainReport:
        return ChainReport(False, entries.entries, seq, problem, **kw)

    rows = session.execute(select(_log_t.c.seq, _log_t.c.entry_id, _log_t.c.ts, _log_t.c.event, _log_t.c.actor,
                                  _log_t.c.subject, _log_t.c.detail, _log_t.c.leaf_index)
                           .where(_log_t.c.leaf_index.is_not(None)).order_by(_log_t.c.leaf_index)).all()
    pending = int(session.execute(select(func.count()).select_from(_log_t)
                                  .where(_log_t.c.leaf_index.is_(None))).scalar_one())
    stored = {(int(lv), int(i)): bytes(h) for lv, i, h in session.execute(
        select(_node_t.c.level, _node_t.c.idx, _node_t.c.hash))}
    leaves: list[bytes] = []
    for r in rows:
        if r.leaf_index != len(leaves):
            missing = len(leaves)
            return bad(r.seq, f"leaf {missing} of the log has no entry: an integrated entry was removed or moved")
        lh = leaf_hash(log_entry_bytes(entry_id=r.entry_id, ts=r.ts, event=r.event, actor=r.actor,
                                       subject=r.subject, detail=r.detail))
        if stored.get((0, r.leaf_index)) != lh:
            return bad(r.seq, f"entry {r.seq} is not the log's leaf {r.leaf_index}: it was altered or moved")
        leaves.append(lh)
    n = len(leaves)
    if any(lv == 0 and i >= n for lv, i in stored):
        return bad(None, f"the log has leaves beyond its {n} integrated entries: entries were removed")
    if not verifiers and session.execute(select(_cp_t.c.tree_size).limit(1)).first() is not None:
        return bad(None, "no log key to check the checkpoints with (the home's registry/log.key)")
    tree = MemoryTree(leaves)
    for (lv, i), h in stored.items():
        try:
            ok = tree.node(lv, i) == h
        except ValueError:
            ok = False
        if not ok:
            return bad(None, f"the log's tree node ({lv}, {i}) is not the hash of its leaves")
    cps = session.execute(select(_cp_t.c.tree_size, _cp_t.c.root_hash, _cp_t.c.note)
                          .order_by(_cp_t.c.tree_size)).all()
    if not cps:
        if n:
            return bad(None, "entries are integrated but no checkpoint covers them")
        return ChainReport(True, entries.entries, None, None, tree_size=0, pending=pending, checkpoints=0)
    last = cps[-1]
    if last.tree_size != n:
        return bad(None, f"the latest checkpoint is of size {last.tree_size} but {n} entries are integrated",
                   tree_size=n, pending=pending)
    last_root = bytes.fromhex(last.root_hash)
    for cp in cps:
        size = int(cp.tree_size)
        try:
            parsed = open_checkpoint(cp.note, verifiers)
            if parsed.size != size or parsed.root.hex() != cp.root_hash:
                raise ProofInvalid("the stored size or root is not the signed one")
            if root_hash(tree.node, size) != parsed.root:
                raise ProofInvalid(f"its root is not the root of the log's first {size} leaves: the log forked")
            verify_consistency(size, n, consistency_path(tree.node, size, n), parsed.root, last_root)
        except ConsentError as e:
            return bad(None, f"checkpoint of size {size} does not verify: {e}", tree_size=n, pending=pending)
    return ChainReport(True, entries.entries, None, None, tree_size=n, pending=pending, checkpoints=len(cps))
