"""The audit log: hash-chained, append-only, with its head kept apart. Each kind of tampering (edit,
deletion, insertion, reordering, truncated tail) is detected and the first bad entry is named, on
SQLite and PostgreSQL. The entry hash is pinned by a golden vector.
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

COLUMNS = ("ts", "event", "actor", "subject", "detail", "prev_hash", "hash")


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
@pytest.fixture
def logged(registry: Registry) -> Registry:
    """A few operations' worth of entries (grant, mint, check, a denial, a revocation)."""
    g = registry.grant()
    tok = registry.token()
    gate = registry.gate()
    gate.check(registry.request(), tok, generator_id=GENERATOR, now=registry.now)
    gate.check(registry.request("another prompt"), tok, generator_id=GENERATOR, now=registry.now)
    registry.revoke("alice", g.id)
    registry.mint(now=registry.now + timedelta(seconds=1))  # denied: revoked
    rep = registry.verify_chain()
    assert rep.ok and rep.entries == registry.count("audit_log") >= 12
    registry.n = rep.entries  # type: ignore[attr-defined]
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


@pytest.mark.parametrize("column", COLUMNS)
def test_an_edited_entry_is_detected(logged, column):
    k = logged.n // 2
    _sql(logged, f"UPDATE audit_log SET {column} = :v WHERE seq = :k", v=_changed(_entry(logged, k)[column]), k=k)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == k, rep


def test_an_edit_that_is_not_json_is_detected(logged):
    _sql(logged, "UPDATE audit_log SET detail = 'not json' WHERE seq = 3")
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == 3


@pytest.mark.parametrize("where", ["first", "middle", "second-to-last"])
def test_a_deleted_entry_is_detected(logged, where):
    k = {"first": 1, "middle": logged.n // 2, "second-to-last": logged.n - 1}[where]
    _sql(logged, "DELETE FROM audit_log WHERE seq = :k", k=k)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == k + 1, rep


def test_a_deleted_entry_with_renumbering_is_detected(logged):
    k = logged.n // 2
    _sql(logged, "DELETE FROM audit_log WHERE seq = :k", k=k)
    for s in range(k + 1, logged.n + 1):  # close the gap
        _sql(logged, "UPDATE audit_log SET seq = :a WHERE seq = :b", a=s - 1, b=s)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == k, rep


def test_an_inserted_entry_is_detected(logged):
    k = logged.n // 2
    for s in range(logged.n, k - 1, -1):  # make room at k
        _sql(logged, "UPDATE audit_log SET seq = :a WHERE seq = :b", a=s + 1, b=s)
    prev = _entry(logged, k - 1)["hash"]
    forged = {"seq": k, "ts": "2026-03-01T12:00:00.000000Z", "event": "gate:check:allowed", "actor": None,
                  "subject": None, "detail": "{}"}
    h = entry_hash(prev, key=logged.home.trust().audit_key, **forged)  # a well-formed entry, correctly chained to the one before it
    _sql(logged, "INSERT INTO audit_log (seq, ts, event, actor, subject, detail, prev_hash, hash) "
                 "VALUES (:seq, :ts, :event, :actor, :subject, :detail, :prev, :hash)", prev=prev, hash=h, **forged)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == k + 1, rep


def test_an_entry_appended_behind_the_heads_back_is_detected(logged):
    last = _entry(logged, logged.n)
    forged = {"seq": logged.n + 1, "ts": "2026-03-01T12:00:00.000000Z", "event": "gate:check:allowed", "actor": None,
                  "subject": None, "detail": "{}"}
    _sql(logged, "INSERT INTO audit_log (seq, ts, event, actor, subject, detail, prev_hash, hash) "
                 "VALUES (:seq, :ts, :event, :actor, :subject, :detail, :prev, :hash)",
         prev=last["hash"], hash=entry_hash(last["hash"], key=logged.home.trust().audit_key, **forged), **forged)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == logged.n + 1, rep


@pytest.mark.parametrize("distance", [1, 3])
def test_reordered_entries_are_detected(logged, distance):
    a = logged.n // 2 - 1
    b = a + distance
    ea, eb = _entry(logged, a), _entry(logged, b)
    sets = ", ".join(f"{c} = :{c}" for c in COLUMNS)
    _sql(logged, f"UPDATE audit_log SET {sets} WHERE seq = :seq", seq=a, **{c: eb[c] for c in COLUMNS})
    _sql(logged, f"UPDATE audit_log SET {sets} WHERE seq = :seq", seq=b, **{c: ea[c] for c in COLUMNS})
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == a, rep


@pytest.mark.parametrize("cut", [1, 3])
def test_a_truncated_tail_is_detected(logged, cut):
    _sql(logged, "DELETE FROM audit_log WHERE seq > :k", k=logged.n - cut)
    rep = logged.verify_chain()
    assert not rep.ok and rep.first_bad == logged.n - cut + 1 and "removed" in rep.problem, rep


def test_an_emptied_log_is_detected(logged):
    _sql(logged, "DELETE FROM audit_log")
    rep = logged.verify_chain()
    assert not rep.ok and rep.entries == 0


def test_a_missing_or_edited_head_is_detected(logged):
    _sql(logged, "UPDATE log_head SET hash = :h WHERE id = 1", h="0" * 64)
    assert not logged.verify_chain().ok
    _sql(logged, "DELETE FROM log_head")
    rep = logged.verify_chain()
    assert not rep.ok and "head" in rep.problem


def test_the_report_is_json_ready(logged):
    _sql(logged, "DELETE FROM audit_log WHERE seq = 2")
    d = logged.verify_chain().as_dict()
    assert d == {"ok": False, "entries": d["entries"], "first_bad_seq": 3, "problem": d["problem"]}
    assert logged.n - 1 >= d["entries"] >= 1


# -- appends ---------------------------------------------------------------------------------------------
def test_an_append_is_part_of_the_callers_transaction(registry):
    n = registry.count("audit_log")
    with pytest.raises(RuntimeError), registry.session() as s:
        audit.append(s, "registry:key:add", now=registry.now, detail={"x": 1})
        raise RuntimeError("the change it describes failed")
    assert registry.count("audit_log") == n
    assert registry.verify_chain().ok


def test_the_raw_appender_writes_the_same_chain(registry):
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
