"""The transparency log over the audit entries (cameo/registry/_log.py), on SQLite and PostgreSQL:
proofs that verify with only the log's key (and with pymerkle), a forked or foreign checkpoint
caught, a retired log key still verifying, an integrator killed with SIGKILL losing nothing and
leaving no gap, never two integrators at once, and the stated bound on integration delay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import GENERATOR, Registry
from sqlalchemy import text

from cameo.registry import (
    Integrator,
    NotIntegrated,
    UnknownEntry,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
    log_keys,
    log_origin,
    verify_proof_document,
)
from cameo.registry import _audit as audit
from cameo.registry._app import audit_verify
from consent import (
    Checkpoint,
    MemoryTree,
    NoteSigner,
    NoteVerifier,
    ProofInvalid,
    SignatureInvalid,
    SigningKey,
    consistency_path,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
)


def _keys(r: Registry) -> Any:
    with r.engine.connect() as conn:
        return log_keys(r.home, log_origin(conn))


def _integrator(r: Registry, **kw: Any) -> Integrator:
    return Integrator(r.engine, _keys(r), **kw)


def _append(r: Registry, n: int, subject: str | None = None) -> list[str]:
    with r.session() as s:
        return [audit.append(s, "registry:key:add", now=r.now, subject=subject, detail={"i": i}) for i in range(n)]


def _use(r: Registry) -> None:
    tok = r.token()
    r.gate().check(r.request(), tok, generator_id=GENERATOR, now=r.now)


def _b(h: str) -> bytes:
    return bytes.fromhex(h)


def _sql(r: Registry, stmt: str, **params: Any) -> None:
    with r.engine.begin() as conn:
        conn.execute(text(stmt), params)


@pytest.fixture
def log(registry: Registry) -> Registry:
    registry.grant(max_uses=50)
    for _ in range(3):
        _use(registry)
    assert _integrator(registry).run_once().integrated == registry.count("audit_log")
    return registry


# -- proofs, with only the log's key ----------------------------------------------------------------------
def test_every_entry_has_a_proof_that_verifies_with_only_the_log_key(log):
    keys = _keys(log)
    verifier = NoteVerifier.parse(keys.signer.verifier.encode())  # what an auditor holds: the key string
    with log.session() as s:
        cp = latest_checkpoint(s)
        ids = [e for (e,) in s.execute(text("SELECT entry_id FROM audit_log ORDER BY leaf_index"))]
        parsed = open_checkpoint(cp["note"], [verifier])
        assert (parsed.size, parsed.root.hex()) == (cp["tree_size"], cp["root_hash"]) == (len(ids), cp["root_hash"])
        assert cp["log_key"] == verifier.encode()
        for i, eid in enumerate(ids):
            p = inclusion_proof(s, eid)
            assert p["leaf_index"] == i and p["tree_size"] == len(ids)
            verify_proof_document(p, [verifier])
            verify_inclusion(_b(p["leaf_hash"]), i, len(ids), [_b(h) for h in p["hashes"]], parsed.root)


def test_proofs_verify_in_pymerkle_too(log):
    pymerkle = pytest.importorskip("pymerkle")
    import base64

    with log.session() as s:
        cp = latest_checkpoint(s)
        ids = [e for (e,) in s.execute(text("SELECT entry_id FROM audit_log ORDER BY leaf_index"))]
        proofs = [inclusion_proof(s, e) for e in ids]
    t = pymerkle.InmemoryTree(algorithm="sha256")
    for p in proofs:
        t.append_entry(base64.b64decode(p["entry_bytes"]))
    assert t.get_root(len(ids)).hex() == cp["root_hash"]
    for i, p in enumerate(proofs):
        theirs = t.prove_inclusion(i + 1, len(ids)).serialize()["path"][1:]
        assert theirs == p["hashes"]


def test_consistency_between_checkpoints(log):
    with log.session() as s:
        cp1 = latest_checkpoint(s)
    _use(log)
    _integrator(log).run_once()
    with log.session() as s:
        cp2 = latest_checkpoint(s)
        q = consistency_proof(s, cp1["tree_size"], cp2["tree_size"])
    assert cp2["tree_size"] > cp1["tree_size"]
    verify_consistency(q["first_size"], q["second_size"], [_b(h) for h in q["hashes"]], _b(cp1["root_hash"]),
                       _b(cp2["root_hash"]))
    assert audit_verify(log.home).ok


def test_a_pending_entry_has_no_proof_yet_and_an_unknown_one_none_at_all(log):
    (eid,) = _append(log, 1)
    with log.session() as s:
        with pytest.raises(NotIntegrated):
            inclusion_proof(s, eid)
        with pytest.raises(UnknownEntry):
            inclusion_proof(s, "ent_" + "0" * 32)
    rep = audit_verify(log.home)
    assert rep.ok and rep.pending == 1


def test_usage_with_proofs(log):
    from cameo.registry._app import usage

    u = usage(log.home, "alice", proofs=True)
    keyv = NoteVerifier.parse(u["checkpoint"]["log_key"])
    root = open_checkpoint(u["checkpoint"]["note"], [keyv]).root
    uses = [e for e in u["entries"] if e["event"].startswith("gate:check")]
    assert len(uses) == 3
    for e in u["entries"]:
        p = e["proof"]
        assert p is not None and e["entry_id"].startswith("ent_")
        import base64

        leaf = leaf_hash(base64.b64decode(p["entry_bytes"]))
        verify_inclusion(leaf, p["leaf_index"], p["tree_size"], [_b(h) for h in p["hashes"]], root)


# -- what audit verify catches in the log ------------------------------------------------------------------
def test_a_forked_checkpoint_is_detected(log):
    """A stored checkpoint replaced by one of the same size with another root (signed with the log
    key itself): it is not the tree's root at that size."""
    keys = _keys(log)
    with log.session() as s:
        cp = latest_checkpoint(s)
    forged = Checkpoint(keys.origin, cp["tree_size"], b"\x07" * 32).sign(keys.signer)
    _sql(log, "UPDATE log_checkpoints SET note = :n, root_hash = :h WHERE tree_size = :t", n=forged,
         h=(b"\x07" * 32).hex(), t=cp["tree_size"])
    rep = audit_verify(log.home)
    assert not rep.ok and "forked" in rep.problem, rep


def test_a_checkpoint_signed_by_another_key_is_detected(log):
    keys = _keys(log)
    with log.session() as s:
        cp = latest_checkpoint(s)
        proof = inclusion_proof(s, s.execute(text("SELECT entry_id FROM audit_log WHERE leaf_index = 0")).scalar_one())
    mallory = NoteSigner(keys.origin, SigningKey.generate())
    root = _b(cp["root_hash"])
    note = Checkpoint(keys.origin, cp["tree_size"], root).sign(mallory)
    _sql(log, "UPDATE log_checkpoints SET note = :n WHERE tree_size = :t", n=note, t=cp["tree_size"])
    rep = audit_verify(log.home)
    assert not rep.ok and "does not verify" in rep.problem, rep
    proof["checkpoint"]["note"] = note  # an auditor handed the foreign checkpoint refuses it too
    with pytest.raises(SignatureInvalid):
        verify_proof_document(proof, [keys.signer.verifier])


def test_a_rewritten_history_is_caught_by_a_checkpoint_kept_outside(log):
    """Someone holding the database and even the log key deletes an integrated entry and rebuilds
    the log: the database is consistent again, but the checkpoint an owner kept is not consistent
    with the new one."""
    with log.session() as s:
        kept = latest_checkpoint(s)
    _sql(log, "DELETE FROM audit_log WHERE leaf_index = 1")
    _sql(log, "DELETE FROM log_checkpoints")
    _sql(log, "DELETE FROM log_nodes")
    _sql(log, "UPDATE audit_log SET leaf_index = NULL")
    _use(log)
    _integrator(log).run_once()
    assert audit_verify(log.home).ok  # (nothing inside the database can tell)
    with log.session() as s:
        now = latest_checkpoint(s)
        leaves = [bytes(h) for (h,) in s.execute(text("SELECT hash FROM log_nodes WHERE level = 0 ORDER BY idx"))]
    assert now["tree_size"] >= kept["tree_size"]
    # the best proof the rebuilt log can give, from the kept size to its size, does not reach the kept root
    path = consistency_path(MemoryTree(leaves).node, kept["tree_size"], now["tree_size"])
    with pytest.raises(ProofInvalid):
        verify_consistency(kept["tree_size"], now["tree_size"], path, _b(kept["root_hash"]), _b(now["root_hash"]))


def test_a_retired_log_key_still_verifies_what_it_signed(log):
    import json

    with log.session() as s:
        old = latest_checkpoint(s)
    key_path = log.home.log_key_path
    old_key = SigningKey.from_pem(key_path.read_bytes())
    log.home.retired_log_keys_path.write_text(json.dumps([{"public_key": old_key.public.b64(),
                                                           "retired_at": "2026-01-01T00:00:00Z"}]))
    key_path.unlink()
    key_path.write_bytes(SigningKey.generate().to_pem(None))
    _use(log)
    _integrator(log).run_once()
    with log.session() as s:
        new = latest_checkpoint(s)
    assert new["log_key"] != old["log_key"]
    assert audit_verify(log.home).ok
    log.home.retired_log_keys_path.unlink()  # without the retired key, the old checkpoints are not trusted
    rep = audit_verify(log.home)
    assert not rep.ok and "does not verify" in rep.problem


# -- the integrator -------------------------------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import sys
    from cameo.registry import Home, Integrator
    it = Integrator.for_home(Home.resolve(), max_batch=int(sys.argv[1]))
    print("ready", flush=True)
    while True:
        it.run_once()
""")


def _tree_size(r: Registry) -> int:
    with r.engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(tree_size), 0) FROM log_checkpoints")).scalar_one())


def test_an_integrator_killed_mid_run_loses_no_entry_and_leaves_no_gap(registry, tmp_path):
    """SIGKILL while a child integrates many small batches (one transaction each), and entries keep
    coming meanwhile; then another integrator finishes. Every entry is a leaf, the leaves are
    0..n-1, and every check of audit verify holds."""
    total = 400
    _append(registry, total)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, "3"], stdout=subprocess.PIPE, env=dict(os.environ),
                             cwd=Path(__file__).parent.parent)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while _tree_size(registry) < 30 and time.monotonic() < deadline:
            time.sleep(0.002)
        _append(registry, 10)  # written while it integrates
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    partial = _tree_size(registry)
    n = registry.count("audit_log")
    assert 30 <= partial < n, (partial, n)  # killed with work left
    rep = audit_verify(registry.home)
    assert rep.ok and rep.tree_size == partial and rep.pending == n - partial, rep
    assert _integrator(registry).run_once().integrated == n - partial
    rep = audit_verify(registry.home)
    assert rep.ok and rep.tree_size == n and rep.pending == 0, rep
    with registry.engine.connect() as conn:
        idx = [i for (i,) in conn.execute(text("SELECT leaf_index FROM audit_log ORDER BY leaf_index"))]
    assert idx == list(range(n))


def test_two_integrators_never_run_at_once(registry):
    """The leader holds its lock (a PostgreSQL advisory lock on its connection, an flock beside a
    SQLite file) for as long as it runs; another integrator does nothing meanwhile, and takes over
    when the leader stops."""
    a, b = _integrator(registry, every_ms=50), _integrator(registry, every_ms=50)
    a.start()
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.is_leader
        _append(registry, 3)
        r = b.run_once()
        assert not r.leader and r.integrated == 0 and not b.is_leader
    finally:
        a.stop()
    _append(registry, 2)
    r = b.run_once()
    assert r.leader and r.integrated >= 2
    assert not b.is_leader  # a one-off run gives the lock back
    assert audit_verify(registry.home).ok


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_advisory_lock_is_held_by_the_leaders_connection(registry):
    """On PostgreSQL the leader is whoever holds the advisory lock: the lock is visible in pg_locks
    while it runs, and gone when it stops."""
    from cameo.registry._log import ADVISORY_KEY

    r = registry
    a = _integrator(r, every_ms=50)
    a.start()
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader and time.monotonic() < deadline:
            time.sleep(0.01)
        with r.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar() is False
    finally:
        a.stop()
    with r.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar() is True
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})


def test_the_bound_on_integration_delay(registry):
    """The module's stated bound: while an integrator runs, an entry committed at t is in a signed
    checkpoint by t + every_ms + D (D: one run's time), and sooner once every_n entries wait."""
    every_ms = 300
    it = _integrator(registry, every_ms=every_ms, every_n=10**6)
    it.start()
    try:
        time.sleep(0.1)
        delays = []
        for _ in range(3):
            (eid,) = _append(registry, 1)
            t0 = time.monotonic()
            while True:
                with registry.session() as s:
                    try:
                        inclusion_proof(s, eid)
                        break
                    except NotIntegrated:
                        pass
                assert time.monotonic() - t0 < 10, "never integrated"
                time.sleep(0.005)
            delays.append(time.monotonic() - t0)
        slack = 1.0  # D on a shared two-core machine, with headroom
        assert max(delays) <= every_ms / 1000 + slack, delays
    finally:
        it.stop()
    it = _integrator(registry, every_ms=60_000, every_n=5)  # by count, long before the time bound
    it.start()
    try:
        time.sleep(0.2)  # its first run
        ids = _append(registry, 5)
        t0 = time.monotonic()
        while registry.count("audit_log") - _tree_size(registry) > 0:
            assert time.monotonic() - t0 < 5, "every_n did not trigger"
            time.sleep(0.005)
        assert time.monotonic() - t0 < 2
        with registry.session() as s:
            inclusion_proof(s, ids[-1])
    finally:
        it.stop()
    assert it.last_error is None
