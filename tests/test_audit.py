"""The audit log: append-only, each entry under a keyed MAC, its place fixed by the transparency log
(entries from before migration 0004 keep their hash chain, whose hash is pinned by a golden vector).
Each kind of tampering (edit, deletion, insertion, reordering, truncated tail) is detected and the
first bad entry is named, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import GENERATOR, Registry
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cameo.registry import _audit as audit
from consent import GENESIS, entry_hash



# -- the entry hash ----------------------------------------------------------------------------------
KEY = bytes(range(32))  # a fixed audit key for the vectors


def _framed(prev: str, seq: int, ts: str, event: str, actor: str | None, subject: str | None, detail: str) -> str:
    """The documented framing, written out independently of consent._audit: HMAC-SHA256 under the
    registry's audit key (derived from the KEK), so the chain cannot be recomputed without it."""
    import hmac

    out = b"cameo.audit.v1 "
    for f in (prev, str(seq), ts, event, actor, subject, detail):
        out += b"-1 " if f is None else str(len(f.encode())).encode() + b" " + f.encode() + b" "
    return hmac.new(KEY, out, hashlib.sha256).hexdigest()


GOLDEN = {"seq": 1, "ts": "2026-01-01T00:00:00.000000Z", "event": "registry:init", "actor": None, "subject": None,
              "detail": '{"registry_id":"r"}'}


def test_entry_hash_golden_vector():
    h = entry_hash(GENESIS, key=KEY, **GOLDEN)
    assert h == _framed(GENESIS, **GOLDEN)
    assert h == "ded2926810e2d9ee25121edf045b441b4a519e2ab55541174d8b85763a88979e"
    # the unkeyed SHA-256 of the same framing (what anyone could recompute) is not it
    assert h != "6bb934a1b843f6047a3efacd214c2e312043dcb9f7909508f5a52ffe35d6fdf0"
    assert entry_hash(GENESIS, key=bytes(32), **GOLDEN) != h


def test_entry_hash_chains_and_frames_its_fields():
    h1 = entry_hash(GENESIS, key=KEY, **GOLDEN)
    assert entry_hash(h1, key=KEY, **{**GOLDEN, "seq": 2}) != entry_hash(GENESIS, key=KEY, **{**GOLDEN, "seq": 2})
    # a missing actor is not an empty one, and no field boundary can be moved
    assert entry_hash(GENESIS, key=KEY, **{**GOLDEN, "actor": ""}) != h1
    assert (entry_hash(GENESIS, key=KEY, **{**GOLDEN, "actor": "ab", "subject": "c"})
            != entry_hash(GENESIS, key=KEY, **{**GOLDEN, "actor": "a", "subject": "bc"}))
    assert (entry_hash(GENESIS, key=KEY, **{**GOLDEN, "actor": "1 x"})
            != entry_hash(GENESIS, key=KEY, **{**GOLDEN, "actor": None, "subject": "x"}))


FIELD = st.one_of(st.none(), st.text(max_size=12))


@given(a=st.tuples(st.text(max_size=12), st.integers(1, 10**6), st.text(max_size=12), FIELD, FIELD, st.text(max_size=12)),
       b=st.tuples(st.text(max_size=12), st.integers(1, 10**6), st.text(max_size=12), FIELD, FIELD, st.text(max_size=12)))
@settings(max_examples=300, deadline=None)
def test_distinct_entries_hash_distinctly(a, b):
    def h(t: tuple[Any, ...]) -> str:
        event, seq, ts, actor, subject, detail = t
        return entry_hash(GENESIS, key=KEY, seq=seq, ts=ts, event=event, actor=actor, subject=subject, detail=detail)

    if a != b:
        assert h(a) != h(b)


# -- a registry with some history -------------------------------------------------------------------------
# Each entry carries a keyed MAC from the moment it is written (an edit is caught, integrated or not);
# its place in history is the transparency log's (a deletion, insertion or reordering of integrated
# entries is caught against the tree and the signed checkpoints). tests/test_transparency.py has the rest.
ENTRY_COLUMNS = ("entry_id", "ts", "event", "actor", "subject", "detail", "hash")


def _integrate(r: Registry) -> Any:
    from cameo.registry._log import Integrator

    return Integrator.for_home(r.home).run_once()


def verify(r: Registry) -> Any:
    from cameo.registry._app import audit_verify

    return audit_verify(r.home)


@pytest.fixture
def logged(registry: Registry) -> Registry:
    """A few operations' worth of entries (grant, mint, check, a denial, a revocation), integrated
    into the transparency log."""
    g = registry.grant()
    tok = registry.token()
    gate = registry.gate()
    gate.check(registry.request(), tok, generator_id=GENERATOR, now=registry.now)
    gate.check(registry.request("another prompt"), tok, generator_id=GENERATOR, now=registry.now)
    registry.revoke("alice", g.id)
    registry.mint(now=registry.now + timedelta(seconds=1))  # denied: revoked
    _integrate(registry)
    rep = verify(registry)
    assert rep.ok and rep.entries == registry.count("audit_log") == rep.tree_size >= 12, rep
    registry.n = rep.entries  # type: ignore[attr-defined]
    with registry.engine.connect() as conn:  # the seq of the entry at each leaf
        registry.seqs = [s for (s,) in conn.execute(text("SELECT seq FROM audit_log ORDER BY leaf_index"))]  # type: ignore[attr-defined]
    return registry


def _sql(r: Registry, stmt: str, **params: Any) -> None:
    with r.engine.begin() as conn:
        conn.execute(text(stmt), params)


def _entry(r: Registry, seq: int) -> dict[str, Any]:
    with r.engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq}).mappings().one())


def _changed(value: Any) -> Any:
    if value is None:
        return "acc_intruder"
    if value.startswith("{"):
        return value[:-1] + ',"z":1}'  # still JSON, different
    return value[:-1] + ("0" if value[-1] != "0" else "1")


@pytest.mark.parametrize("integrated", [True, False], ids=["integrated", "pending"])
@pytest.mark.parametrize("column", ENTRY_COLUMNS)
def test_an_edited_entry_is_detected(registry, column, integrated):
    registry.grant()
    registry.token()
    if integrated:
        _integrate(registry)
    assert verify(registry).ok
    with registry.engine.connect() as conn:
        k = conn.execute(text("SELECT max(seq) FROM audit_log")).scalar_one() - 1
    _sql(registry, f"UPDATE audit_log SET {column} = :v WHERE seq = :k", v=_changed(_entry(registry, k)[column]), k=k)
    rep = verify(registry)
    assert not rep.ok and rep.first_bad == k, rep


def test_an_edit_that_is_not_json_is_detected(logged):
    _sql(logged, "UPDATE audit_log SET detail = 'not json' WHERE seq = :s", s=logged.seqs[2])
    rep = verify(logged)
    assert not rep.ok and rep.first_bad == logged.seqs[2]


@pytest.mark.parametrize("where", ["first", "middle", "second-to-last"])
def test_a_deleted_entry_is_detected(logged, where):
    k = {"first": 0, "middle": logged.n // 2, "second-to-last": logged.n - 2}[where]
    _sql(logged, "DELETE FROM audit_log WHERE seq = :s", s=logged.seqs[k])
    rep = verify(logged)
    assert not rep.ok and rep.first_bad == logged.seqs[k + 1] and "removed" in rep.problem, rep


def test_a_deleted_entry_with_renumbered_leaves_is_detected(logged):
    k = logged.n // 2
    _sql(logged, "DELETE FROM audit_log WHERE seq = :s", s=logged.seqs[k])
    for i in range(k + 1, logged.n):  # close the gap in the leaf indices
        _sql(logged, "UPDATE audit_log SET leaf_index = :a WHERE seq = :s", a=i - 1, s=logged.seqs[i])
    rep = verify(logged)
    assert not rep.ok and rep.first_bad == logged.seqs[k + 1] and "altered or moved" in rep.problem, rep


def test_an_inserted_entry_is_detected(logged):
    """A well-formed entry with a correct MAC (as if the audit key leaked), slipped into the tree."""
    from consent import entry_mac, log_entry_bytes

    k = logged.n // 2
    for i in range(logged.n - 1, k - 1, -1):  # make room at leaf k
        _sql(logged, "UPDATE audit_log SET leaf_index = :a WHERE seq = :s", a=i + 1, s=logged.seqs[i])
    forged = {"entry_id": "ent_" + "f" * 32, "ts": "2026-03-01T12:00:00.000000Z", "event": "gate:check:allowed",
              "actor": None, "subject": None, "detail": "{}"}
    mac = entry_mac(logged.home.trust().audit_key, log_entry_bytes(**forged))
    _sql(logged, "INSERT INTO audit_log (entry_id, ts, event, actor, subject, detail, hash, leaf_index) "
                 "VALUES (:entry_id, :ts, :event, :actor, :subject, :detail, :mac, :k)", mac=mac, k=k, **forged)
    rep = verify(logged)
    assert not rep.ok and "leaf" in rep.problem, rep


def test_a_pending_entry_copied_under_a_new_id_is_detected(logged):
    """The MAC covers the entry id: a copy of an entry (a second "use") does not verify."""
    e = _entry(logged, logged.seqs[3])
    _sql(logged, "INSERT INTO audit_log (entry_id, ts, event, actor, subject, detail, hash) "
                 "VALUES (:i, :ts, :event, :actor, :subject, :detail, :hash)", i="ent_" + "0" * 32,
         **{c: e[c] for c in ("ts", "event", "actor", "subject", "detail", "hash")})
    rep = verify(logged)
    assert not rep.ok and "altered" in rep.problem, rep


@pytest.mark.parametrize("distance", [1, 3])
def test_reordered_entries_are_detected(logged, distance):
    a = logged.n // 2 - 1
    b = a + distance
    sa, sb = logged.seqs[a], logged.seqs[b]
    _sql(logged, "UPDATE audit_log SET leaf_index = NULL WHERE seq IN (:a, :b)", a=sa, b=sb)
    _sql(logged, "UPDATE audit_log SET leaf_index = :i WHERE seq = :s", i=b, s=sa)
    _sql(logged, "UPDATE audit_log SET leaf_index = :i WHERE seq = :s", i=a, s=sb)
    rep = verify(logged)
    assert not rep.ok and rep.first_bad == sb, rep


@pytest.mark.parametrize("cut", [1, 3])
def test_a_truncated_tail_is_detected(logged, cut):
    _sql(logged, "DELETE FROM audit_log WHERE leaf_index >= :k", k=logged.n - cut)
    rep = verify(logged)
    assert not rep.ok and "removed" in rep.problem, rep


def test_an_emptied_log_is_detected(logged):
    _sql(logged, "DELETE FROM audit_log")
    rep = verify(logged)
    assert not rep.ok and rep.entries == 0


def test_a_missing_or_edited_head_is_detected(logged):
    _sql(logged, "UPDATE log_head SET hash = :h WHERE id = 1", h="1" * 64)
    assert not verify(logged).ok
    _sql(logged, "DELETE FROM log_head")
    rep = verify(logged)
    assert not rep.ok and "head" in rep.problem


def test_the_report_is_json_ready(logged):
    _sql(logged, "DELETE FROM audit_log WHERE seq = :s", s=logged.seqs[1])
    d = verify(logged).as_dict()
    assert d == {"ok": False, "entries": d["entries"], "first_bad_seq": logged.seqs[2], "problem": d["problem"],
                 "tree_size": 0, "pending": 0, "checkpoints": 0}
    assert logged.n - 1 >= d["entries"] >= 1
    json.dumps(d)


# -- appends ---------------------------------------------------------------------------------------------
def test_an_append_is_part_of_the_callers_transaction(registry):
    n = registry.count("audit_log")
    with pytest.raises(RuntimeError), registry.session() as s:
        audit.append(s, "registry:key:add", now=registry.now, detail={"x": 1})
        raise RuntimeError("the change it describes failed")
    assert registry.count("audit_log") == n
    assert registry.verify_chain().ok


def test_the_raw_appender_writes_the_same_entries(registry):
    with registry.session() as s:
        audit.append(s, "registry:key:add", now=registry.now, actor="a", detail={"k": "v"})
        cur = s.connection().connection.driver_connection.cursor()
        audit.RawAppender(registry.dialect, registry.home.trust().audit_key)(cur, "registry:key:add", now=registry.now, subject="s", detail={"k": "\u00e9"})
        audit.append(s, "registry:key:add", now=registry.now)
    rep = registry.verify_chain()
    assert rep.ok
    with registry.session() as s:
        raw = [e for e in audit.entries_for(s, "s")]
    assert raw[0]["event"] == "registry:key:add" and raw[0]["detail"] == {"k": "\u00e9"}
    assert raw[0]["entry_id"].startswith("ent_") and raw[0]["leaf_index"] is None


def test_usage_lists_the_owners_entries_denials_included(registry):
    g = registry.grant()
    tok = registry.token()
    registry.gate().check(registry.request("other"), tok, generator_id=GENERATOR, now=registry.now)
    u = registry.usage("alice")
    events = [e["event"] for e in u["entries"]]
    assert events == ["account:create", "consent:grant:create", "token:mint:allowed", "gate:check:denied"]
    assert u["denied"] == 1 and u["count"] == 4
    assert u["entries"][1]["detail"]["grant"] == g.id
    # bob's log has his own account only: he is the actor of the mint, not its subject
    assert [e["event"] for e in registry.usage("bob")["entries"]] == ["account:create"]
    # the entries hold ids and digests, never the token itself
    assert tok not in str(registry.dump()["audit_log"])


def test_detail_encoding_is_sorted_compact_utf8_json():
    from consent import encode_detail

    s = encode_detail({"b": [1, {"z": "é", "a": None}], "a": "x\n\"y\""})
    assert s == '{"a":"x\\n\\"y\\"","b":[1,{"a":null,"z":"é"}]}'
    assert json.loads(s) == {"a": "x\n\"y\"", "b": [1, {"a": None, "z": "é"}]}
    assert encode_detail({"score": float("nan")}) == '{"score":null}'  # standard JSON has no NaN


def test_entry_timestamps_are_utc_with_microseconds_whatever_the_zone_given():
    from datetime import timedelta as _td
    from datetime import timezone as _tz

    from cameo.registry._audit import ts

    t = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=_tz.utc)
    assert ts(t) == "2026-03-04T05:06:07.000089Z"
    assert ts(t.astimezone(_tz(_td(hours=-7)))) == "2026-03-04T05:06:07.000089Z"


def test_event_names_are_typed_tags_with_the_outcome_a_field(registry):
    from cameo.registry._events import EventTag, Outcome, event_name, outcome_of

    assert event_name(EventTag.GATE_RELEASE, Outcome.DENIED) == "gate:release:denied"
    assert outcome_of("gate:release:denied") == "denied" and outcome_of("cameo:enroll") is None
    with pytest.raises(ValueError):
        event_name("gate:check:denied", Outcome.DENIED)  # the old "gate:check:denied:denied"
    with registry.session() as s, pytest.raises(ValueError):
        audit.append(s, "made:up", now=registry.now)


def test_a_call_without_tokens_is_logged_once_as_denied(registry):
    registry.gate().check(registry.request(), [], generator_id=GENERATOR, now=registry.now)
    with registry.engine.connect() as conn:
        last = conn.execute(text("SELECT event FROM audit_log ORDER BY seq DESC LIMIT 1")).scalar()
    assert last == "gate:check:denied"
