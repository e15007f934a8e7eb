"""Minting and the gate against a live registry, on SQLite and PostgreSQL.

Scenario tables: each way a token (or a token request) can be refused is denied with its own reason
code, written to the owner's usage log as a ``...:denied`` entry, and changes nothing but the log.
Documents not signed by the key on file are rejected and change nothing at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, Registry

from cameo.registry import _services as reg
from cameo._errors import (
    Denied,
    DuplicateDocument,
    DuplicateHandle,
    InvalidDuration,
    MintDenied,
    UnknownAccount,
    UnknownGenerator,
    UnknownGrant,
)
from conditioning._errors import GateDenied
from consent import DEFAULT_SKEW, ConsentError, KeyMismatch, SigningKey, mint_token

S = timedelta(seconds=1)
TTL = timedelta(minutes=5)
OTHER_GEN = "other-gen"


def _register_other_generator(r: Registry) -> None:
    with r.session() as s:
        reg.register_generator(s, OTHER_GEN, adapter="demo", config={}, public_key=None, now=r.now)


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(128).astype("<f4")


def _no_log(dump: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dump.items() if k not in ("audit_log", "log_head")}


# -- gate scenarios -------------------------------------------------------------------------------------
# Each builds a situation and returns how the token is presented: token, generator, request, now.
def _expired(r: Registry) -> dict[str, Any]:
    return {"token": r.token(), "now": r.now + TTL + DEFAULT_SKEW + S}


def _not_yet_valid(r: Registry) -> dict[str, Any]:
    return {"token": r.token(now=r.now + timedelta(hours=1)), "now": r.now}


def _wrong_generator(r: Registry) -> dict[str, Any]:
    _register_other_generator(r)
    return {"token": r.token(), "generator": OTHER_GEN}


def _different_request(r: Registry) -> dict[str, Any]:
    return {"token": r.token(request=r.request("alice waves")),
                "request": r.request("alice says something she never said")}


def _already_used(r: Registry) -> dict[str, Any]:
    tok = r.token()
    r.gate().decide_release([tok], generator_id=GENERATOR, request=r.request(), now=r.now, load_templates=False)
    return {"token": tok}


def _grant_revoked(r: Registry) -> dict[str, Any]:
    tok = r.token()
    r.revoke("alice", r.grants["alice"])
    return {"token": tok}


def _consent_withdrawn(r: Registry) -> dict[str, Any]:
    tok = r.token()
    r.revoke("alice")  # scope: consent
    return {"token": tok}


def _uses_exhausted(r: Registry) -> dict[str, Any]:
    t1, t2 = r.token(), r.token()  # the grant allows one use; two tokens were minted before it was used
    r.gate().decide_release([t1], generator_id=GENERATOR, request=r.request(), now=r.now, load_templates=False)
    return {"token": t2}


def _grant_expired(r: Registry) -> dict[str, Any]:
    later = r.now + timedelta(days=7) - timedelta(minutes=1)  # the grant ends at now + 7d
    return {"token": r.token(now=later), "now": later + timedelta(minutes=2)}


def _consent_expired(r: Registry) -> dict[str, Any]:
    later = r.consent_expires - timedelta(minutes=1)
    return {"token": r.token(now=later), "now": later + timedelta(minutes=2)}


def _grant_mismatch(r: Registry) -> dict[str, Any]:
    # signed by the registry's own key, for a real grant, but naming another grantee
    tok, _ = mint_token(r.keyring(), issuer="x", jti="tok_mismatch", owner="alice", audience=GENERATOR,
                        grant_id=r.grants["alice"], grantee="carol", request_digest=r.request().digest,
                        purpose="generate", modalities=("face",), now=r.now, ttl=TTL)
    return {"token": tok}


GATE_DENIALS = [
    pytest.param(_expired, {}, "token.expired", id="expired"),
    pytest.param(_not_yet_valid, {}, "token.not_yet_valid", id="not-yet-valid"),
    pytest.param(_wrong_generator, {}, "token.audience", id="wrong-generator"),
    pytest.param(_different_request, {}, "token.request", id="different-request"),
    pytest.param(_already_used, {}, "token.used", id="already-used"),
    pytest.param(_grant_revoked, {}, "grant.revoked", id="grant-revoked"),
    pytest.param(_consent_withdrawn, {}, "consent.withdrawn", id="consent-withdrawn"),
    pytest.param(_uses_exhausted, {"max_uses": 1}, "grant.exhausted", id="uses-exhausted"),
    pytest.param(_grant_expired, {}, "grant.expired", id="grant-expired"),
    pytest.param(_consent_expired, {"ttl": timedelta(days=60)}, "consent.expired", id="consent-expired"),
    pytest.param(_grant_mismatch, {}, "grant.grantee", id="grantee-mismatch"),
]


@pytest.fixture
def scene(registry: Registry) -> Registry:
    """alice is enrolled (consent expiring in 30 days); no grant yet."""
    registry.consent_expires = registry.now + timedelta(days=30)  # type: ignore[attr-defined]
    registry.enroll("alice", {"face": _face(1), "voice": _face(2)}, expires=registry.consent_expires)  # type: ignore[attr-defined]
    registry.grants = {}  # type: ignore[attr-defined]
    return registry


def _grant(r: Registry, **kw: Any) -> None:
    r.grants["alice"] = r.grant("alice", "bob", **kw).id  # type: ignore[attr-defined]


@pytest.mark.parametrize(("build", "grant_kw", "code"), GATE_DENIALS)
def test_gate_check_denies_with_its_reason_and_logs_it(scene, build, grant_kw, code):
    _grant(scene, **grant_kw)
    how = build(scene)
    before = scene.dump()
    denied_before = len(scene.denials("alice", "gate:check"))
    d = scene.gate().check(how.get("request", scene.request()), how["token"], generator_id=how.get("generator", GENERATOR),
                           now=how.get("now", scene.now))
    assert not d.allowed
    assert code in {r.code for r in d.reasons}
    assert d.as_dict()["allowed"] is False and code in {x["code"] for x in d.as_dict()["reasons"]}
    # audited for the owner, with the reason
    logged = scene.denials("alice", "gate:check")
    assert len(logged) == denied_before + 1 and code in logged[-1]
    # nothing but the log changed: no use consumed, no token spent
    after = scene.dump()
    assert _no_log(after) == _no_log(before)
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    assert scene.verify_chain().ok


@pytest.mark.parametrize(("build", "grant_kw", "code"), GATE_DENIALS)
def test_gate_release_denies_with_its_reason_and_consumes_nothing(scene, build, grant_kw, code):
    _grant(scene, **grant_kw)
    how = build(scene)
    before = scene.dump()
    with pytest.raises(GateDenied) as e:
        scene.gate(vault=True).decide_release([how["token"]], generator_id=how.get("generator", GENERATOR),
                                              request=how.get("request", scene.request()),
                                              now=how.get("now", scene.now))
    assert e.value.exit_code == 3
    assert code in {r.code for r in e.value.reasons}
    assert how["token"] not in str(e.value)
    assert code in scene.denials("alice", "gate:release")[-1]
    assert _no_log(scene.dump()) == _no_log(before)


def test_check_allows_a_valid_token_and_consumes_nothing(scene):
    _grant(scene)
    tok = scene.token()
    before = scene.dump()
    for _ in range(3):  # a dry run can be repeated
        d = scene.gate().check(scene.request(), tok, generator_id=GENERATOR, now=scene.now)
        assert d.allowed and d.reasons == ()
    assert _no_log(scene.dump()) == _no_log(before)
    events = [e["event"] for e in scene.usage("alice")["entries"]]
    assert events.count("gate:check:allowed") == 3


def test_release_consumes_exactly_one_use_and_then_the_token_is_spent(scene):
    _grant(scene, max_uses=3)
    tok = scene.token()
    gate = scene.gate(vault=True)
    decision, items = gate.decide_release([tok], generator_id=GENERATOR, request=scene.request(), now=scene.now)
    assert decision.allowed
    assert np.array_equal(items[0]["face"], _face(1))
    assert items[0]["restrictions"] == ("no political content",)
    row = scene.grant_row(scene.grants["alice"])
    assert row.uses == 1 and scene.count("token_uses") == 1
    with pytest.raises(GateDenied) as e:
        gate.decide_release([tok], generator_id=GENERATOR, request=scene.request(), now=scene.now)
    assert {r.code for r in e.value.reasons} == {"token.used"}
    assert scene.grant_row(scene.grants["alice"]).uses == 1
    events = [e["event"] for e in scene.usage("alice")["entries"]]
    assert events[-2:] == ["gate:release:allowed", "gate:release:denied"]


def test_only_the_granted_modalities_are_released(registry):
    registry.enroll("alice", {"face": _face(1), "voice": _face(2)})
    registry.grant("alice", "bob", modalities=("voice",))
    tok = registry.token()
    _, items = registry.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=registry.request(),
                                                         now=registry.now)
    assert items[0]["face"] is None
    assert np.array_equal(items[0]["voice"], _face(2))


def test_a_token_signed_by_another_registry_is_denied_and_logged(registry):
    registry.grant()
    foreign = SigningKey.generate()
    from consent import TokenKeyring

    tok, _ = mint_token(TokenKeyring(foreign), issuer="elsewhere", jti="tok_x", owner="alice", audience=GENERATOR,
                        grant_id="grant_x", grantee="bob", request_digest=registry.request().digest,
                        purpose="generate", modalities=("face",), now=registry.now, ttl=TTL)
    n = registry.count("audit_log")
    d = registry.gate().check(registry.request(), tok, generator_id=GENERATOR, now=registry.now)
    assert [r.code for r in d.reasons] == ["token.signature"]
    assert registry.count("audit_log") == n + 1  # logged (with no owner: its claims are not to be believed)


def test_a_token_for_a_grant_this_registry_never_issued_is_denied(registry):
    tok, _ = mint_token(registry.keyring(), issuer="x", jti="tok_x", owner="alice", audience=GENERATOR,
                        grant_id="grant_nowhere", grantee="bob", request_digest=registry.request().digest,
                        purpose="generate", modalities=("face",), now=registry.now, ttl=TTL)
    d = registry.gate().check(registry.request(), tok, generator_id=GENERATOR, now=registry.now)
    assert "grant.unknown" in {r.code for r in d.reasons}


@pytest.mark.parametrize("garbage", ["", "not a token", "v4.public.AAAA.AAAA", "x" * 10_000],
                         ids=["empty", "words", "no-signature", "huge"])
def test_garbage_tokens_are_denied_not_crashed(registry, garbage):
    d = registry.gate().check(registry.request(), garbage, generator_id=GENERATOR, now=registry.now)
    assert not d.allowed and d.reasons[0].code in ("token.malformed", "token.type", "token.signature")


def test_an_unregistered_generator_is_denied(registry):
    registry.grant()
    tok = registry.token()
    d = registry.gate().check(registry.request(), tok, generator_id="ghost-gen", now=registry.now)
    assert {"token.audience", "generator.unknown"} <= {r.code for r in d.reasons}


# -- several tokens in one call ----------------------------------------------------------------------------
def test_no_token_is_a_denial(registry):
    d = registry.gate().check(registry.request(), [], generator_id=GENERATOR, now=registry.now)
    assert not d.allowed and [r.code for r in d.reasons] == ["token.none"]


def test_two_tokens_for_one_cameo_in_one_call_are_denied(registry):
    registry.grant(max_uses=5)
    t1, t2 = registry.token(), registry.token()
    d = registry.gate().check(registry.request(), [t1, t2], generator_id=GENERATOR, now=registry.now)
    assert "call.duplicate" in {r.code for r in d.reasons}


def test_too_many_cameos_in_one_call_are_denied(make_registry):
    r = make_registry(("alice", "bob", "carol", "dave"))
    toks = []
    for i, owner in enumerate(("alice", "carol", "dave")):
        r.enroll(owner, {"face": _face(10 + i), "voice": np.random.default_rng(20 + i).standard_normal(256).astype("<f4")})
        r.grant(owner, "bob")
        toks.append(r.token(owner, "bob"))
    d = r.gate().check(r.request(), toks, generator_id=GENERATOR, now=r.now)
    assert "call.too_many" in {x.code for x in d.reasons}
    assert r.gate(max_cameos=3).check(r.request(), toks, generator_id=GENERATOR, now=r.now).allowed


def test_a_call_is_all_or_nothing(registry):
    g_alice = registry.grant("alice", "bob")
    registry.grant("carol", "bob")
    t_alice, t_carol = registry.token("alice", "bob"), registry.token("carol", "bob")
    registry.revoke("carol", registry_grant_of(registry, "carol"))
    before = registry.dump()
    with pytest.raises(GateDenied) as e:
        registry.gate().decide_release([t_alice, t_carol], generator_id=GENERATOR, request=registry.request(),
                                       now=registry.now, load_templates=False)
    assert "grant.revoked" in {r.code for r in e.value.reasons}
    assert _no_log(registry.dump()) == _no_log(before)  # alice's use was not consumed either
    assert registry.grant_row(g_alice.id).uses == 0
    # both owners see the denied call
    assert registry.denials("alice", "gate:release") and registry.denials("carol", "gate:release")


def registry_grant_of(r: Registry, owner: str) -> str:
    with r.session() as s:
        return reg.grants_of(s, reg.get_account(s, owner))[-1]["id"]


# -- minting ------------------------------------------------------------------------------------------
def _mint_no_grant(r: Registry) -> dict[str, Any]:
    return {"grantee": "carol"}  # carol exists but alice granted her nothing


def _mint_revoked(r: Registry) -> dict[str, Any]:
    r.revoke("alice", r.grants["alice"])
    return {}


def _mint_withdrawn(r: Registry) -> dict[str, Any]:
    r.revoke("alice")
    return {}


def _mint_grant_expired(r: Registry) -> dict[str, Any]:
    return {"now": r.now + timedelta(days=7)}


def _mint_exhausted(r: Registry) -> dict[str, Any]:
    tok = r.token()
    r.gate().decide_release([tok], generator_id=GENERATOR, request=r.request(), now=r.now, load_templates=False)
    return {}


def _mint_other_generator(r: Registry) -> dict[str, Any]:
    _register_other_generator(r)
    return {"generator": OTHER_GEN}


def _mint_other_purpose(r: Registry) -> dict[str, Any]:
    return {"purpose": "remix"}


def _mint_stale(r: Registry) -> dict[str, Any]:
    return {"data": r.token_request(created=r.now - timedelta(minutes=6))}


def _mint_from_the_future(r: Registry) -> dict[str, Any]:
    return {"data": r.token_request(created=r.now + timedelta(minutes=6))}


def _mint_key_named_wrongly(r: Registry) -> dict[str, Any]:
    return {"data": r.token_request(grantee_key=r.keys["carol"].key_id)}


def _mint_without_key_proof(r: Registry) -> dict[str, Any]:
    # claims to be bob, signed by carol's key
    return {"data": r.token_request(key=r.keys["carol"])}


def _mint_audience(r: Registry) -> dict[str, Any]:
    from sqlalchemy import delete

    from cameo.registry._models import Cameo

    with r.session() as s:  # alice re-enrolls with an audience of herself only, after granting
        s.execute(delete(Cameo))
    r.enroll("alice", {"face": _face(3)}, audience="only-me")
    return {}


MINT_DENIALS = [
    pytest.param(_mint_no_grant, {}, "grant.none", id="grantee-without-grant"),
    pytest.param(_mint_revoked, {}, "grant.revoked", id="grant-revoked"),
    pytest.param(_mint_withdrawn, {}, "consent.withdrawn", id="consent-withdrawn"),
    pytest.param(_mint_grant_expired, {}, "grant.expired", id="grant-expired"),
    pytest.param(_mint_exhausted, {"max_uses": 1}, "grant.exhausted", id="uses-exhausted"),
    pytest.param(_mint_other_generator, {}, "grant.generator", id="generator-not-granted"),
    pytest.param(_mint_other_purpose, {}, "grant.purpose", id="purpose-not-granted"),
    pytest.param(_mint_stale, {}, "request.stale", id="stale-request"),
    pytest.param(_mint_from_the_future, {}, "request.stale", id="future-request"),
    pytest.param(_mint_key_named_wrongly, {}, "request.key", id="request-names-other-key"),
    pytest.param(_mint_without_key_proof, {}, "request.signature", id="grantee-without-key-proof"),
    pytest.param(_mint_audience, {}, "consent.audience", id="outside-audience"),
]


@pytest.mark.parametrize(("build", "grant_kw", "code"), MINT_DENIALS)
def test_mint_denies_with_its_reason_and_logs_it(scene, build, grant_kw, code):
    _grant(scene, **grant_kw)
    how = build(scene)
    before = scene.dump()
    minted = scene.mint("alice", how.pop("grantee", "bob"), **how)
    assert minted.token == "" and minted.claims is None
    assert minted.denied is not None and code in {r.code for r in minted.denied.reasons}
    assert MintDenied(minted.denied.reasons).exit_code == 3
    assert code in scene.denials("alice", "token:mint")[-1]
    assert _no_log(scene.dump()) == _no_log(before)


def test_mint_binds_the_token_to_grant_generator_request_and_grantee(scene):
    _grant(scene)
    req = scene.request("alice rows a boat")
    minted = scene.mint(request=req, ttl=timedelta(minutes=2))
    c = minted.claims
    assert (c.owner, c.grantee, c.audience, c.grant_id, c.request_digest, c.purpose) == (
        "alice", "bob", GENERATOR, scene.grants["alice"], req.digest, "generate")
    assert c.expires - c.issued_at == timedelta(minutes=2) and c.issued_at == scene.now
    assert [e["event"] for e in scene.usage("alice")["entries"]][-1] == "token:mint:allowed"
    assert minted.token not in str(scene.usage("alice"))  # the log keeps the token id, never the token


def test_mint_for_unknown_handles_raises_and_writes_nothing(registry):
    registry.grant()
    before = registry.dump()
    ghost = SigningKey.generate()
    registry.keys["ghost"] = ghost
    with pytest.raises(UnknownAccount):
        registry.mint("alice", "ghost")  # an unregistered grantee
    with pytest.raises(UnknownAccount):
        registry.mint("nobody", "bob")  # an unknown owner
    with pytest.raises(UnknownGenerator):
        registry.mint(generator="ghost-gen")
    assert registry.dump() == before


# -- documents must be signed by the key on file ------------------------------------------------------------
def _grant_by_another_key(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(key=SigningKey.generate()).to_bytes(), KeyMismatch


def _grant_naming_another_owner_key(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(owner_key=r.keys["carol"].key_id).to_bytes(), KeyMismatch


def _grant_naming_another_grantee_key(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(grantee_key=r.keys["carol"].key_id).to_bytes(), KeyMismatch


def _grant_signed_by_the_grantee(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(key=r.keys["bob"]).to_bytes(), KeyMismatch


def _grant_for_unknown_generator(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(generators=("ghost-gen",)).to_bytes(), UnknownGenerator


def _grant_to_unknown_grantee(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(grantee="ghost").to_bytes(), UnknownAccount


def _grant_already_expired(r: Registry) -> tuple[bytes, type]:
    return r.make_grant(created=r.now - timedelta(days=8)).to_bytes(), InvalidDuration


def _grant_tampered(r: Registry) -> tuple[bytes, type]:
    data = bytearray(r.make_grant().to_bytes())
    data[20] ^= 1
    return bytes(data), ConsentError


def _grant_replayed(r: Registry) -> tuple[bytes, type]:
    g = r.make_grant()
    with r.session() as s:
        reg.submit_grant(s, g.to_bytes(), now=r.now)
    return g.to_bytes(), DuplicateDocument


def _grant_outside_audience(r: Registry) -> tuple[bytes, type]:
    r.enroll("alice", {"face": _face(1)}, audience="only-me")
    return r.make_grant().to_bytes(), Denied


@pytest.mark.parametrize(("build", "error"), [
    (_grant_by_another_key, KeyMismatch), (_grant_naming_another_owner_key, KeyMismatch),
    (_grant_naming_another_grantee_key, KeyMismatch), (_grant_signed_by_the_grantee, KeyMismatch),
    (_grant_for_unknown_generator, UnknownGenerator), (_grant_to_unknown_grantee, UnknownAccount),
    (_grant_already_expired, InvalidDuration), (_grant_tampered, ConsentError), (_grant_replayed, DuplicateDocument),
    (_grant_outside_audience, Denied),
], ids=lambda f: getattr(f, "__name__", "")[7:] or None)
def test_submit_grant_refuses_and_changes_nothing(registry, build, error):
    data, _ = build(registry)
    before = registry.dump()
    with pytest.raises(error) as e, registry.session() as s:
        reg.submit_grant(s, data, now=registry.now)
    assert e.value.exit_code in (2, 3, 4)
    assert registry.dump() == before


def test_submit_revocation_must_be_the_owners(registry):
    g = registry.grant()
    cases = [
        (registry.make_revocation("alice", g.id, key=SigningKey.generate()), KeyMismatch),
        (registry.make_revocation("alice", g.id, key=registry.keys["bob"]), KeyMismatch),  # the grantee
        (registry.make_revocation("carol", g.id), UnknownGrant),  # someone else's grant
        (registry.make_revocation("alice", "grant_nowhere"), UnknownGrant),
    ]
    before = registry.dump()
    for data, error in cases:
        with pytest.raises(error), registry.session() as s:
            reg.submit_revocation(s, data, now=registry.now)
    assert registry.dump() == before
    assert registry.grant_row(g.id).revoked_at is None


def test_a_replayed_revocation_is_refused_and_changes_nothing(registry):
    g = registry.grant()
    data = registry.make_revocation("alice", g.id)
    with registry.session() as s:
        reg.submit_revocation(s, data, now=registry.now)
    before = registry.dump()
    with pytest.raises(DuplicateHandle) as e, registry.session() as s:
        reg.submit_revocation(s, data, now=registry.now + timedelta(hours=1))
    assert e.value.exit_code == 2
    assert registry.dump() == before


def test_revocation_is_idempotent_and_withdrawal_revokes_every_grant(registry):
    g1 = registry.grant("alice", "bob")
    g2 = registry.grant("alice", "carol")
    assert registry.revoke("alice", g1.id)["revoked_grants"] == [g1.id]
    assert registry.revoke("alice", g1.id)["revoked_grants"] == []  # already revoked
    out = registry.revoke("alice")
    assert out["scope"] == "consent" and out["revoked_grants"] == [g2.id]
    assert registry.grant_row(g1.id).revoked_at and registry.grant_row(g2.id).revoked_at
    assert registry.mint("alice", "carol").denied is not None


def test_a_consent_record_signed_by_another_key_is_not_sealed(registry):
    from cameo.registry._cameos import TemplateInput, seal_cameo
    from consent import ConsentRecord, new_id

    t = TemplateInput("face", "enc", _face(1))
    forged = ConsentRecord.create(
        SigningKey.generate(), id=new_id("consent"), owner="alice", owner_key=registry.keys["alice"].key_id,
        purposes=("generate",), modalities=("face",), audience="everyone", restrictions=(),
        templates=(t.commitment(),), adult_attested=True, created=registry.now, expires=None)
    before = registry.dump()
    with pytest.raises(KeyMismatch), registry.session() as s:
        seal_cameo(s, registry.home.vault(), owner=reg.get_account(s, "alice"), consent_bytes=forged.to_bytes(),
                   templates=[t], now=registry.now)
    assert registry.dump() == before
