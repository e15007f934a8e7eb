"""The gate's enforcing tier (``Gate.decide_release`` / ``Gate.release``), step by step, on SQLite
and PostgreSQL.

Each numbered step of ``conditioning._gate`` has a case below that is *only* refused by that step:
the reasons of the denial are compared as an exact set, and the baseline (the same call without the
flaw) is allowed, so removing a step turns its case into an allowed release and the test fails.
Every denial must consume nothing and land in the audit log (under the owner when the token's
grant is known).

Then: all tokens or nothing (a failure at the consume step rolls back the uses already taken),
at most two cameos per call, a token for cameo A never releases cameo B, only the granted
modalities are released, the bundle's tensors are zero once the call ends (also through
``conditioning._generate.generate`` with a custom adapter), and revocation wins across processes:
a token minted and checked in another process before the revocation is denied after it.

No real models: templates are synthetic vectors sealed as enrollment would seal them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyseto
import pytest
import torch
from conftest import GENERATOR, PASSPHRASE, Registry

from cameo.registry import _services as reg
from conditioning._errors import BundleClosed, GateDenied
from conditioning._gate import MAX_CAMEOS_PER_CALL, Gate, TokenVerdict
from consent import DEFAULT_SKEW, SigningKey
from consent._token import TOKEN_TYPE

S = timedelta(seconds=1)
TTL = timedelta(minutes=5)
FACE_ENC, VOICE_ENC = "test-face@1", "test-voice@1"
CTX = mp.get_context("spawn")


def _vec(seed: int, dim: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4")


ALICE_FACE, ALICE_VOICE, CAROL_FACE, CAROL_VOICE = _vec(1), _vec(2, 256), _vec(3), _vec(4, 256)


def _enroll(r: Registry, owner: str, face: np.ndarray, voice: np.ndarray | None = None, **kw: Any) -> str:
    """Seal synthetic face (and voice) templates for ``owner``, each under its own encoder id."""
    from cameo.registry._cameos import TemplateInput, seal_cameo
    from consent import ConsentRecord, new_id

    inputs = [TemplateInput("face", FACE_ENC, face, 3)]
    if voice is not None:
        inputs.append(TemplateInput("voice", VOICE_ENC, voice, 2))
    record = ConsentRecord.create(
        r.keys[owner], id=new_id("consent"), owner=owner, owner_key=r.keys[owner].key_id,
        purposes=("generate", "remix"), modalities=tuple(t.modality for t in inputs), audience="approved",
        restrictions=kw.get("restrictions", ("no political content",)),
        templates=tuple(t.commitment() for t in inputs), adult_attested=True, created=r.now,
        expires=kw.get("expires"))
    with r.session() as s:
        return str(seal_cameo(s, r.home.vault(), owner=reg.get_account(s, owner), consent_bytes=record.to_bytes(),
                              templates=inputs, now=r.now).id)


@pytest.fixture
def scene(registry: Registry) -> Registry:
    """alice (face + voice) and carol (face + voice) are enrolled; bob is the grantee of neither yet."""
    registry.cameo = {"alice": _enroll(registry, "alice", ALICE_FACE, ALICE_VOICE),  # type: ignore[attr-defined]
                      "carol": _enroll(registry, "carol", CAROL_FACE, CAROL_VOICE)}
    return registry


def _release(r: Registry, tokens: list[str], *, gate: Gate | None = None, generator: str = GENERATOR,
             request: Any = None, now: datetime | None = None) -> tuple[Any, list[dict[str, Any]]]:
    gate = gate or r.gate(vault=True)
    return gate.decide_release(tokens, generator_id=generator, request=request or r.request(),
                               now=r.now if now is None else now)


def _denied(r: Registry, tokens: list[str], **kw: Any) -> set[str]:
    with pytest.raises(GateDenied) as e:
        _release(r, tokens, **kw)
    assert e.value.exit_code == 3
    for t in tokens:
        assert len(t) < 40 or t[12:60] not in str(e.value)  # messages never carry tokens
    return {x.code for x in e.value.reasons}


def _no_log(dump: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dump.items() if k not in ("audit_log", "log_head")}


def _last_entries(r: Registry, n: int = 1) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from cameo.registry._models import AuditEntry

    with r.session() as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(n)).scalars().all()
        return [{"event": x.event, "subject": x.subject, "detail": json.loads(x.detail)} for x in reversed(rows)]


# -- forging helpers: tokens signed by the registry's own key (or another) with chosen claims -----------
def _claims(r: Registry, **over: Any) -> dict[str, Any]:
    from consent import fmt_time

    c = {"iss": "cameo-registry-test", "jti": "tok_forged0", "sub": "alice", "aud": GENERATOR,
         "gnt": r.grant_ids["alice"], "gte": "bob", "req": r.request().digest, "pur": "generate",  # type: ignore[attr-defined]
         "mod": ["face", "voice"], "iat": fmt_time(r.now), "nbf": fmt_time(r.now), "exp": fmt_time(r.now + TTL)}
    c.update(over)
    return c


def _sign(claims: dict[str, Any], key: SigningKey, *, kid: str | None = None,
          implicit: bytes = TOKEN_TYPE) -> str:
    pk = pyseto.Key.new(4, "public", key.to_pem(None))
    footer = json.dumps({"kid": kid or key.key_id}, separators=(",", ":")).encode()
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return pyseto.encode(pk, payload, footer=footer, implicit_assertion=implicit).decode()


def _registry_key(r: Registry) -> SigningKey:
    return r.home.token_signing_key()


# -- the cases: one per step, each refused by that step alone -------------------------------------------
# A case gets the scene (bob holds a live grant from alice: 3 uses, face+voice) and returns how the
# call is made: tokens, and optionally generator, request and now.
def _parse(kind: str):
    def build(r: Registry) -> dict[str, Any]:
        good = r.token()
        head, _, _ = good.rpartition(".")
        bad = {"empty": "", "words": "not a token", "no-footer": head,
               "other-version": "v2.public." + good[len("v4.public."):],
               "non-ascii": good[:-3] + "é" + good[-2:],
               "non-canonical": _non_canonical(good),
               "oversized": good + "." + "A" * 5000,
               "footer-not-json": head + "." + pyseto.utils.base64url_encode(b"{kid").decode()}[kind]
        return {"tokens": [bad]}
    return build


def _non_canonical(token: str) -> str:
    """The same token, but the footer's last base64url character has an unused low bit set."""
    from consent._token import _B64URL

    head, _, footer = token.rpartition(".")
    if len(footer) % 4 in (2, 3):
        last = _B64URL[_B64URL.index(footer[-1]) | 1]
        return head + "." + footer[:-1] + last
    return head + "." + footer + "B"  # (4n + 1 characters: never valid)


def _sig_foreign_key_claiming_our_kid(r: Registry) -> dict[str, Any]:
    return {"tokens": [_sign(_claims(r), SigningKey.generate(), kid=_registry_key(r).key_id)]}


def _sig_foreign_key(r: Registry) -> dict[str, Any]:
    return {"tokens": [_sign(_claims(r), SigningKey.generate())]}


def _sig_payload_altered(r: Registry) -> dict[str, Any]:
    good = r.token()
    parts = good.split(".")
    body = bytearray(pyseto.utils.base64url_decode(parts[2]))
    body[10] ^= 0x01  # a claim byte; the signature (last 64 bytes) is kept
    parts[2] = pyseto.utils.base64url_encode(bytes(body)).decode()
    return {"tokens": [".".join(parts)]}


def _type_other_assertion(r: Registry) -> dict[str, Any]:
    # our key, our claims, signed as some other kind of document (another implicit assertion)
    return {"tokens": [_sign(_claims(r), _registry_key(r), implicit=b"application/vnd.cameo.grant.v1")]}


def _type_no_assertion(r: Registry) -> dict[str, Any]:
    return {"tokens": [_sign(_claims(r), _registry_key(r), implicit=b"")]}


def _audience_other_generator(r: Registry) -> dict[str, Any]:
    with r.session() as s:
        reg.register_generator(s, "other-gen", adapter="demo", config={}, public_key=None, now=r.now)
    return {"tokens": [r.token()], "generator": "other-gen"}


def _audience_unregistered_generator(r: Registry) -> dict[str, Any]:
    # a well-signed token naming a generator this registry does not know, presented by that generator
    return {"tokens": [_sign(_claims(r, aud="ghost-gen"), _registry_key(r))], "generator": "ghost-gen"}


def _validity_expired(r: Registry) -> dict[str, Any]:
    return {"tokens": [r.token()], "now": r.now + TTL + DEFAULT_SKEW + S}


def _validity_not_yet(r: Registry) -> dict[str, Any]:
    later = r.now + timedelta(hours=1)
    return {"tokens": [r.token(now=later)], "now": later - DEFAULT_SKEW - S}


def _request_other_prompt(r: Registry) -> dict[str, Any]:
    return {"tokens": [r.token()], "request": r.request("alice says something she never said")}


def _request_other_params(r: Registry) -> dict[str, Any]:
    return {"tokens": [r.token()], "request": r.request(params={"seconds": 40})}


def _request_swapped_reference(r: Registry) -> dict[str, Any]:
    from cameo._request import GenerationRequest

    from PIL import Image

    ref = r.home.path / "ref.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(ref)  # a real picture (screened: no face in it)
    req = GenerationRequest.build("alice waves", {}, [ref])
    tok = r.token(request=req)
    Image.new("RGB", (64, 48), (40, 120, 200)).save(ref)  # same name, other media after minting
    return {"tokens": [tok], "request": GenerationRequest.build("alice waves", {}, [ref])}


def _grant_unknown(r: Registry) -> dict[str, Any]:
    return {"tokens": [_sign(_claims(r, gnt="grant_never_issued"), _registry_key(r))]}


def _grant_revoked(r: Registry) -> dict[str, Any]:
    tok = r.token()
    r.revoke("alice", r.grant_ids["alice"])  # type: ignore[attr-defined]
    return {"tokens": [tok]}


def _grant_expired(r: Registry) -> dict[str, Any]:
    end = r.now + timedelta(days=7)  # the grant's not_after
    return {"tokens": [r.token(now=end - timedelta(minutes=1))], "now": end}


def _grant_exhausted(r: Registry) -> dict[str, Any]:
    toks = [r.token() for _ in range(4)]  # the grant has 3 uses; 4 tokens were minted while all were left
    for t in toks[:3]:
        _release(r, [t])
    return {"tokens": [toks[3]]}


def _grant_other_grantee(r: Registry) -> dict[str, Any]:
    return {"tokens": [_sign(_claims(r, gte="carol"), _registry_key(r))]}


def _grant_other_owner(r: Registry) -> dict[str, Any]:
    # names carol's cameo but rides on alice's grant: cameo B through a token for cameo A
    return {"tokens": [_sign(_claims(r, sub="carol"), _registry_key(r))]}


def _registry_writes_cameo(r: Registry, handle: str, *, status: str | None = None, expires: Any = False) -> None:
    """What the registry itself would write (its state MAC recomputed): the status, or a consent
    record the owner re-signed with another expiry."""
    from cameo.registry._models import Cameo
    from cameo.registry._trust import trust_of
    from consent import ConsentRecord, new_id

    with r.session() as s:
        cam = s.get(Cameo, r.cameo[handle])  # type: ignore[attr-defined]
        if expires is not False:
            old = ConsentRecord.from_bytes(cam.consent_envelope, r.keys[handle].public)
            new = ConsentRecord.create(
                r.keys[handle], id=new_id("consent"), owner=old.owner, owner_key=old.owner_key, purposes=old.purposes,
                modalities=old.modalities, audience=old.audience, restrictions=old.restrictions,
                templates=old.templates, adult_attested=True, created=old.created, expires=expires)
            cam.consent_envelope, cam.consent_digest, cam.consent_id = new.to_bytes(), new.digest, new.id
        if status is not None:
            cam.status = status
        cam.state_mac = trust_of(s).cameo_mac(cam.id, cam.account_id, cam.status, cam.consent_digest)


def _consent_withdrawn(r: Registry) -> dict[str, Any]:
    # the status alone (withdrawal also revokes every grant, which step 7 would catch first)
    tok = r.token()
    _registry_writes_cameo(r, "alice", status="withdrawn")
    return {"tokens": [tok]}


def _consent_expired(r: Registry) -> dict[str, Any]:
    ends = r.now + timedelta(hours=1)
    _registry_writes_cameo(r, "alice", expires=ends)
    return {"tokens": [r.token(now=ends - timedelta(minutes=1))], "now": ends}


def _single_use(r: Registry) -> dict[str, Any]:
    tok = r.token()
    _release(r, [tok])
    return {"tokens": [tok]}


STEPS = [
    *(pytest.param(_parse(k), {"token.malformed", "token.type"}, id=f"1-parse-{k}")
      for k in ("empty", "words", "no-footer", "other-version", "non-ascii", "non-canonical", "oversized",
                "footer-not-json")),
    pytest.param(_sig_foreign_key_claiming_our_kid, {"token.signature"}, id="2-signature-forged-with-our-kid"),
    pytest.param(_sig_foreign_key, {"token.signature"}, id="2-signature-unknown-key"),
    pytest.param(_sig_payload_altered, {"token.signature"}, id="2-signature-payload-altered"),
    pytest.param(_type_other_assertion, {"token.signature", "token.type"}, id="3-type-other-document"),
    pytest.param(_type_no_assertion, {"token.signature", "token.type"}, id="3-type-no-assertion"),
    pytest.param(_audience_other_generator, {"token.audience"}, id="4-audience-other-generator"),
    # (the grant does not name that generator either: its signed terms are checked too)
    pytest.param(_audience_unregistered_generator, frozenset({"generator.unknown", "grant.generator"}),
                 id="4-audience-unregistered"),
    pytest.param(_validity_expired, {"token.expired"}, id="5-validity-expired"),
    pytest.param(_validity_not_yet, {"token.not_yet_valid"}, id="5-validity-not-yet"),
    pytest.param(_request_other_prompt, {"token.request"}, id="6-request-prompt"),
    pytest.param(_request_other_params, {"token.request"}, id="6-request-params"),
    pytest.param(_request_swapped_reference, {"token.request"}, id="6-request-reference-bytes"),
    pytest.param(_grant_unknown, {"grant.unknown"}, id="7-grant-unknown"),
    pytest.param(_grant_revoked, {"grant.revoked"}, id="7-grant-revoked"),
    pytest.param(_grant_expired, {"grant.expired"}, id="7-grant-expired"),
    pytest.param(_grant_exhausted, {"grant.exhausted"}, id="7-grant-exhausted"),
    pytest.param(_grant_other_grantee, {"grant.grantee"}, id="7-grant-other-grantee"),
    pytest.param(_grant_other_owner, {"grant.owner"}, id="7-grant-other-owner"),
    pytest.param(_consent_withdrawn, {"consent.withdrawn"}, id="8-consent-withdrawn"),
    pytest.param(_consent_expired, {"consent.expired"}, id="8-consent-expired"),
    pytest.param(_single_use, {"token.used"}, id="9-single-use"),
]


@pytest.fixture
def granted(scene: Registry) -> Registry:
    scene.grant_ids = {"alice": scene.grant("alice", "bob").id}  # type: ignore[attr-defined]
    return scene


def test_the_baseline_call_is_released(granted):
    """The call every case below spoils in exactly one way: allowed, one use consumed."""
    decision, items = _release(granted, [granted.token()])
    assert decision.allowed and len(items) == 1
    assert granted.grant_row(granted.grant_ids["alice"]).uses == 1
    # and a forged-by-us token with the default claims is allowed too: the cases change one claim only
    decision, _ = _release(granted, [_sign(_claims(granted, jti="tok_forged_ok"), _registry_key(granted))])
    assert decision.allowed


@pytest.mark.parametrize(("build", "codes"), STEPS)
def test_each_gate_step_alone_denies_and_consumes_nothing(granted, build, codes):
    how = build(granted)
    before = granted.dump()
    got = _denied(granted, how["tokens"], generator=how.get("generator", GENERATOR),
                  request=how.get("request"), now=how.get("now"))
    if isinstance(codes, frozenset):  # exactly these reasons together
        assert got == codes, got
    else:
        assert len(got) == 1 and got <= codes, got  # that step's reason, and no other
    after = granted.dump()
    assert _no_log(after) == _no_log(before)  # no use consumed, no token spent
    # the denial is durably logged, as one entry of this call
    (entry,) = _last_entries(granted)
    assert entry["event"] == "gate:release:denied"
    assert got <= {x["code"] for x in entry["detail"]["reasons"]}
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    if got & {"token.malformed", "token.type", "token.signature", "grant.unknown"}:
        # claims that did not verify, or name no grant of ours, are nobody's to be told about
        assert entry["subject"] is None
    else:
        assert entry["subject"] == granted.ids["alice"]  # the owner sees it in `usage`
        assert got <= granted.denials("alice", "gate:release")[-1]
    assert granted.verify_chain().ok


@pytest.mark.parametrize(("build", "codes"), STEPS)
def test_each_gate_step_alone_denies_a_dry_run_too(granted, build, codes):
    """``Gate.check`` runs steps 1-9 without step 10 behind them: a step missing here is not caught
    later (e.g. a used token would pass a check if step 9 were gone)."""
    how = build(granted)
    before = _no_log(granted.dump())
    d = granted.gate().check(how.get("request") or granted.request(), how["tokens"],
                             generator_id=how.get("generator", GENERATOR),
                             now=granted.now if how.get("now") is None else how["now"])
    got = {x.code for x in d.reasons}
    assert not d.allowed and (got == codes if isinstance(codes, frozenset) else len(got) == 1 and got <= codes), got
    assert _no_log(granted.dump()) == before
    assert _last_entries(granted)[0]["event"] == "gate:check:denied"


def test_validity_is_read_at_the_now_passed_in_within_the_skew(granted):
    tok = granted.token()
    _release(granted, [tok], now=granted.now + TTL + DEFAULT_SKEW)  # the last instant still inside
    late = granted.token()
    assert _denied(granted, [late], now=granted.now + TTL + DEFAULT_SKEW + S) == {"token.expired"}
    early = granted.token(now=granted.now + timedelta(minutes=1))
    _release(granted, [early], now=granted.now + timedelta(minutes=1) - DEFAULT_SKEW)


def test_every_reason_is_reported_not_just_the_first(granted):
    with granted.session() as s:
        reg.register_generator(s, "other-gen", adapter="demo", config={}, public_key=None, now=granted.now)
    tok = granted.token()
    granted.revoke("alice", granted.grant_ids["alice"])
    codes = _denied(granted, [tok], generator="other-gen", request=granted.request("another prompt"),
                    now=granted.now + timedelta(hours=1))
    assert codes == {"token.audience", "token.expired", "token.request", "grant.revoked"}
    assert granted.denials("alice", "gate:release")[-1] == codes


# -- step 10: consumption is atomic even when the decision's reads were stale -----------------------------
class _StaleGate(Gate):
    """A gate whose steps 7 and 9 read a stale state (as a decision racing a revocation, or another
    call for the last use, would): only step 10's conditional UPDATE and unique INSERT stand."""

    IGNORE = frozenset({"grant.revoked", "grant.exhausted", "token.used"})

    def _verify(self, *a: Any, **k: Any) -> TokenVerdict:
        v = super()._verify(*a, **k)
        return TokenVerdict(v.index, v.token, tuple(x for x in v.reasons if x.code not in self.IGNORE), v.live,
                            v.grant, v.consent)


class _Hook:
    """A screener that runs ``fn`` inside the decision's transaction (and screens nothing else)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def ensure(self, request: Any) -> None:
        pass

    def stale(self, cur: Any, paramstyle: str) -> bool:
        return False

    def __call__(self, **kw: Any) -> list[Any]:
        return list(self.fn(**kw))


def _screener(eng: Any, home: Any) -> Any:
    from cameo._likeness import Encoders
    from conditioning._generate import authority_for
    from conditioning._screen import Screener

    return Screener(eng, home.vault(), Encoders(), authority_for(home))


def _stale_gate(r: Registry) -> Gate:
    return _StaleGate(r.engine, r.home.verify_keyring(), r.home.vault(), screener=r.screener())


@pytest.mark.parametrize("flaw", ["revoked", "exhausted", "used"])
def test_10_consume_refuses_what_a_stale_decision_would_allow(granted, flaw):
    gid = granted.grant_ids["alice"]
    toks = [granted.token() for _ in range(4)]
    if flaw == "revoked":
        granted.revoke("alice", gid)
        tok, uses = toks[0], 0
    elif flaw == "exhausted":
        for t in toks[:3]:
            _release(granted, [t])
        tok, uses = toks[3], 3
    else:
        _release(granted, [toks[0]])
        tok, uses = toks[0], 1
    before = _no_log(granted.dump())
    codes = _denied(granted, [tok], gate=_stale_gate(granted))
    assert codes == ({"token.used"} if flaw == "used" else {"grant.race"})
    # the UPDATE of the counter ran before the INSERT of a used token id failed: rolled back
    assert granted.grant_row(gid).uses == uses
    assert _no_log(granted.dump()) == before


def test_10_a_revocation_issued_mid_decision_waits_for_it_and_then_wins(granted):
    """PostgreSQL: a release reads its grant under the row's lock (the use count it verified is the
    one it replaces, under a fresh MAC). Another connection's revocation issued after steps 1-9 read
    the grant waits for that decision, which started before the revocation committed and may
    finish; the revocation then commits and every decision that starts after it is denied."""
    import threading

    if granted.dialect != "postgresql":
        pytest.skip("on SQLite the decision holds the write lock from its first statement: no interleaving")
    gid = granted.grant_ids["alice"]
    tok, later = granted.token(), granted.token()
    done = threading.Event()
    waited = []

    def revoke() -> None:
        granted.revoke("alice", gid)  # its own transaction
        done.set()

    def revoke_now(**_: Any) -> list[Any]:
        threading.Thread(target=revoke, daemon=True).start()
        waited.append(not done.wait(1.0))  # still blocked behind this decision's row lock
        return []

    gate = Gate(granted.engine, granted.home.verify_keyring(), granted.home.vault(), screener=_Hook(revoke_now))
    decision, _ = _release(granted, [tok], gate=gate)
    assert decision.allowed and waited == [True]
    assert done.wait(30)
    row = granted.grant_row(gid)
    assert row.uses == 1 and row.revoked_at is not None
    assert _denied(granted, [later]) == {"grant.revoked"}


# -- step 11: what is released -------------------------------------------------------------------------
def test_11_release_decrypts_the_owners_templates_with_restrictions_and_ids(granted):
    tok = granted.token()
    with granted.gate(vault=True).release(granted.request(), [tok], generator_id=GENERATOR, now=granted.now) as b:
        (c,) = b.cameos
        assert c.cameo_id == granted.cameo["alice"]
        assert torch.equal(c.face, torch.from_numpy(ALICE_FACE)) and torch.equal(c.voice, torch.from_numpy(ALICE_VOICE))
        assert (c.face_encoder, c.voice_encoder) == (FACE_ENC, VOICE_ENC)
        assert c.restrictions == ("no political content",) and b.restrictions == ("no political content",)
        assert c.grant_id == granted.grant_ids["alice"] and c.token_id.startswith("tok_")
        assert c.consent_digest and c.consent_id.startswith("consent")
        assert b.generator_id == GENERATOR and b.request_digest == granted.request().digest
    events = [e["event"] for e in granted.usage("alice")["entries"]]
    assert events[-1] == "gate:release:allowed"


def test_11_an_owner_with_no_enrolled_likeness_releases_nothing(scene):
    g = scene.grant("bob", "carol")  # bob never enrolled
    tok = scene.token("bob", "carol")
    assert _denied(scene, [tok]) == {"cameo.none"}
    assert scene.grant_row(g.id).uses == 0 and scene.count("token_uses") == 0


@pytest.mark.parametrize(("modalities", "face", "voice"), [(("face",), True, False), (("voice",), False, True),
                                                           (("face", "voice"), True, True)])
def test_only_the_granted_modalities_are_released(scene, modalities, face, voice):
    scene.grant("alice", "bob", modalities=modalities)
    tok = scene.token()
    with scene.gate(vault=True).release(scene.request(), [tok], generator_id=GENERATOR, now=scene.now) as b:
        (c,) = b.cameos
        assert (c.face is not None, c.voice is not None) == (face, voice)
        assert (c.face_encoder is not None, c.voice_encoder is not None) == (face, voice)
        assert b.face_embeddings().shape == ((1, 128) if face else (0, 0))
        assert b.voice_embeddings().shape == ((1, 256) if voice else (0, 0))


# -- cameo A never releases cameo B ---------------------------------------------------------------------
def test_a_token_for_one_cameo_releases_that_cameo_only(scene):
    scene.grant("alice", "bob")
    scene.grant("carol", "bob")
    tok_alice = scene.token("alice", "bob")
    with scene.gate(vault=True).release(scene.request(), [tok_alice], generator_id=GENERATOR, now=scene.now) as b:
        assert [c.cameo_id for c in b.cameos] == [scene.cameo["alice"]]
        (c,) = b.cameos
        assert torch.equal(c.face, torch.from_numpy(ALICE_FACE))
        assert not torch.equal(c.face, torch.from_numpy(CAROL_FACE))
    # and carol's log never hears of it
    assert not [e for e in scene.usage("carol")["entries"] if e["event"].startswith("gate:")]


def test_a_token_naming_another_cameo_than_its_grant_is_denied(scene):
    """Every mix of claims between two real grants (alice -> bob, carol -> bob) is refused."""
    ga, gc = scene.grant("alice", "bob"), scene.grant("carol", "bob")
    key = _registry_key(scene)
    scene.grant_ids = {"alice": ga.id}  # type: ignore[attr-defined]
    for i, (owner, grant_id) in enumerate([("carol", ga.id), ("alice", gc.id)]):
        tok = _sign(_claims(scene, sub=owner, gnt=grant_id, jti=f"tok_mix{i}"), key)
        assert _denied(scene, [tok]) == {"grant.owner"}
    assert scene.grant_row(ga.id).uses == scene.grant_row(gc.id).uses == 0


# -- all tokens or nothing; at most two cameos -----------------------------------------------------------
def test_two_tokens_one_bad_releases_nothing_and_consumes_nothing(scene):
    ga, gc = scene.grant("alice", "bob"), scene.grant("carol", "bob")
    good, bad = scene.token("alice", "bob"), scene.token("carol", "bob", request=scene.request("other"))
    before = _no_log(scene.dump())
    for order in ([good, bad], [bad, good]):
        assert _denied(scene, order) == {"token.request"}
    assert _no_log(scene.dump()) == before
    # both owners see the refused call; the good token is still unused and works alone
    assert scene.denials("alice", "gate:release") and scene.denials("carol", "gate:release")
    decision, _ = _release(scene, [good])
    assert decision.allowed and scene.grant_row(ga.id).uses == 1 and scene.grant_row(gc.id).uses == 0


def test_a_failure_at_the_consume_step_rolls_back_the_uses_already_taken(scene):
    """alice's use is taken (UPDATE + INSERT) before carol's fails at step 10: the call is one
    transaction, so alice's use is given back."""
    ga, gc = scene.grant("alice", "bob"), scene.grant("carol", "bob")
    t_alice, t_carol = scene.token("alice", "bob"), scene.token("carol", "bob")
    scene.revoke("carol", gc.id)
    before = _no_log(scene.dump())
    assert _denied(scene, [t_alice, t_carol], gate=_stale_gate(scene)) == {"grant.race"}
    assert _no_log(scene.dump()) == before
    assert scene.grant_row(ga.id).uses == 0 and scene.count("token_uses") == 0


def test_at_most_two_cameos_per_call(make_registry):
    r = make_registry(("alice", "bob", "carol", "dave"))
    for i, who in enumerate(("alice", "carol", "dave")):
        _enroll(r, who, _vec(10 + i))
    grants = {who: r.grant(who, "bob", modalities=("face",)).id for who in ("alice", "carol", "dave")}
    toks = {who: r.token(who, "bob") for who in grants}
    assert MAX_CAMEOS_PER_CALL == 2
    before = _no_log(r.dump())
    assert _denied(r, list(toks.values())) == {"call.too_many"}
    assert _no_log(r.dump()) == before
    # two are fine, and both are released
    with r.gate(vault=True).release(r.request(), [toks["alice"], toks["dave"]], generator_id=GENERATOR,
                                     now=r.now) as b:
        assert len(b.cameos) == 2 and b.face_embeddings().shape == (2, 128)
    assert [r.grant_row(grants[w]).uses for w in ("alice", "carol", "dave")] == [1, 0, 1]


# -- the bundle's tensors are zero after the call -------------------------------------------------------
def _capture(bundle: Any) -> tuple[list[torch.Tensor], list[float]]:
    """Every tensor a generator could hold on to, and their norms while the bundle is open."""
    held = [t for c in bundle.cameos for t in (c.face, c.voice) if t is not None]
    held += [bundle.face_embeddings(), bundle.voice_embeddings()]
    return held, [float(t.norm()) for t in held]


def test_the_bundle_is_zeroed_when_release_ends(scene):
    scene.grant("alice", "bob")
    scene.grant("carol", "bob")
    toks = [scene.token("alice", "bob"), scene.token("carol", "bob")]
    with scene.gate(vault=True).release(scene.request(), toks, generator_id=GENERATOR, now=scene.now) as b:
        held, norms = _capture(b)
        views = list(b.cameos)
    assert len(held) == 6 and all(n > 0 for n in norms)
    assert all(not t.any() for t in held)
    assert b.closed and all(v.closed for v in views)
    with pytest.raises(BundleClosed):
        _ = views[0].face
    with pytest.raises(BundleClosed):
        b.face_embeddings()


def test_the_bundle_is_zeroed_when_the_generator_fails(scene):
    scene.grant("alice", "bob")
    held: list[torch.Tensor] = []
    release = scene.gate(vault=True).release(scene.request(), [scene.token()], generator_id=GENERATOR,
                                             now=scene.now)
    with pytest.raises(RuntimeError, match="model crashed"), release as b:
        held, _ = _capture(b)
        raise RuntimeError("model crashed")
    assert held and all(not t.any() for t in held)


class _RecordingAdapter:
    """A generator that keeps references to everything it was handed (as a leaky model might)."""

    name = "recording"
    seen: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail

    def validate_request(self, request: Any) -> None:
        pass

    def check(self, bundle: Any) -> None:
        pass

    def generate(self, bundle: Any, request: Any, out_dir: Path) -> list[Path]:
        held, norms = _capture(bundle)
        extra = bundle.face_embeddings().clone()  # a copy the generator made itself
        self.seen.append({"held": held, "norms": norms, "ids": [c.cameo_id for c in bundle.cameos],
                          "voices": [c.voice is not None for c in bundle.cameos], "copy_norm": float(extra.norm())})
        if self.fail:
            raise RuntimeError("generator failed")
        out = Path(out_dir) / "out.png"
        from PIL import Image

        Image.new("RGB", (64, 64), (int(extra.abs().sum()) % 255, 90, 200)).save(out)
        return [out]


@pytest.fixture
def recording(scene: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    from conditioning import adapters as _adapters

    _RecordingAdapter.seen = []
    monkeypatch.setitem(_adapters.ADAPTERS, "recording", _RecordingAdapter)
    with scene.session() as s:
        reg.register_generator(s, "rec-gen", adapter="recording", config={}, public_key=None, now=scene.now)
        reg.register_generator(s, "rec-fail", adapter="recording", config={"fail": True}, public_key=None,
                               now=scene.now)
    return scene


def test_generate_zeroes_every_tensor_the_generator_got(recording, tmp_path):
    from conditioning._generate import generate

    r = recording
    r.grant("alice", "bob", generators=("rec-gen",), modalities=("face",))
    r.grant("carol", "bob", generators=("rec-gen",))
    req = r.request()
    toks = [r.token("alice", "bob", generator="rec-gen"), r.token("carol", "bob", generator="rec-gen")]
    out = generate(r.home, req, toks, generator="rec-gen", out_dir=tmp_path / "out", now=r.now)
    (seen,) = _RecordingAdapter.seen
    assert seen["ids"] == [r.cameo["alice"], r.cameo["carol"]]
    assert seen["voices"] == [False, True]  # alice granted her face only: her voice was never released
    assert all(n > 0 for n in seen["norms"]) and seen["copy_norm"] > 0
    assert all(not t.any() for t in seen["held"])
    assert [Path(o["file"]).name for o in out["outputs"]] == ["out.png"]


def test_generate_zeroes_the_tensors_when_the_generator_fails(recording, tmp_path):
    from conditioning._generate import generate

    r = recording
    r.grant("alice", "bob", generators=("rec-fail",))
    tok = r.token(generator="rec-fail")
    with pytest.raises(RuntimeError, match="generator failed"):
        generate(r.home, r.request(), [tok], generator="rec-fail", out_dir=tmp_path / "out", now=r.now)
    (seen,) = _RecordingAdapter.seen
    assert seen["held"] and all(not t.any() for t in seen["held"])
    assert not (tmp_path / "out").exists()


# -- revocation wins across processes ------------------------------------------------------------------
def _inflight_worker(home_path: str, url: str, now_iso: str, ready: Any, go: Any, out: Any) -> None:
    """Process P1: mints bob's token (proving his key), checks it at the gate (allowed), then waits;
    when told, releases it with the very same Gate object and connection."""
    from cameo.registry._db import bind_trust, make_engine, transaction
    from cameo.registry._home import Home
    from cameo._request import GenerationRequest
    from consent import TokenRequest, new_id

    home = Home.resolve(home_path, url)
    now = datetime.fromisoformat(now_iso)
    eng = make_engine(url)
    bind_trust(eng, home.trust())
    req = GenerationRequest.build("alice waves from a boat", {"seconds": 4})
    try:
        bob = home.load_key("bob", PASSPHRASE)
        with transaction(eng) as s:
            acc = reg.get_account(s, "bob")
            tr = TokenRequest.create(bob, id=new_id("treq"), grantee="bob", grantee_key=acc.key_id, owner="alice",
                                     grant_id=None, generator=GENERATOR, purpose="generate",
                                     request_digest=req.digest, created=now)
            minted = reg.mint(s, tr.to_bytes(), home.keyring(), now=now)
        gate = Gate(eng, home.verify_keyring(), home.vault(), screener=_screener(eng, home))
        out.put(("checked", gate.check(req, minted.token, generator_id=GENERATOR, now=now).allowed))
        ready.set()
        if not go.wait(120):
            out.put(("timeout",))
            return
        try:
            _, items = gate.decide_release([minted.token], generator_id=GENERATOR, request=req, now=now)
            out.put(("released", len(items)))
        except GateDenied as e:
            out.put(("denied", sorted(x.code for x in e.reasons)))
        gate.close()
    except BaseException as e:  # noqa: BLE001 - report, do not hang the test
        out.put(("error", repr(e)))
    finally:
        eng.dispose()


@pytest.mark.parametrize("scope", ["grant", "consent"])
def test_a_revocation_denies_a_call_in_flight_on_another_process(scene, scope):
    g = scene.grant("alice", "bob")
    ready, go, out = CTX.Event(), CTX.Event(), CTX.Queue()
    p = CTX.Process(target=_inflight_worker, args=(str(scene.home.path), scene.url, scene.now.isoformat(), ready,
                                                     go, out))
    p.start()
    try:
        assert out.get(timeout=120) == ("checked", True)
        assert ready.wait(10)
        scene.revoke("alice", g.id if scope == "grant" else None)  # committed when this returns
        go.set()
        result = out.get(timeout=60)
    finally:
        go.set()
        p.join(60)
        if p.is_alive():
            p.kill()
    assert result[0] == "denied", result
    assert "grant.revoked" in result[1]
    if scope == "consent":
        assert "consent.withdrawn" in result[1]
    assert scene.grant_row(g.id).uses == 0 and scene.count("token_uses") == 0
    events = [e["event"] for e in scene.usage("alice")["entries"]]
    assert events[-3:] == ["gate:check:allowed", "consent:grant:revoke" if scope == "grant" else "consent:withdraw",
                           "gate:release:denied"]


def _release_loop(url: str, home_path: str, tokens: list[str], now_iso: str, revoked: Any, count: Any,
                  after: int, out: Any) -> None:
    """One Gate (one kept connection) releasing token after token, with templates decrypted. Before
    each call it notes whether the revocation had already been announced as committed."""
    from cameo.registry._db import bind_trust, make_engine
    from cameo.registry._home import Home
    from cameo._request import GenerationRequest

    eng = make_engine(url)
    req = GenerationRequest.build("alice waves from a boat", {"seconds": 4})
    now = datetime.fromisoformat(now_iso)
    calls = []
    try:
        home = Home.resolve(home_path, url)
        bind_trust(eng, home.trust())
        gate = Gate(eng, home.verify_keyring(), home.vault(), screener=_screener(eng, home))
        seen_after = 0
        for tok in tokens:
            announced = revoked.is_set()
            try:
                _, items = gate.decide_release([tok], generator_id=GENERATOR, request=req, now=now)
                calls.append((announced, True, (), items[0]["face"] is not None))
            except GateDenied as e:
                calls.append((announced, False, tuple(x.code for x in e.reasons), False))
            with count.get_lock():
                count.value += 1
            seen_after += announced
            if seen_after >= after:
                break
            time.sleep(0.01)
        gate.close()
        out.put(calls)
    except BaseException as e:  # noqa: BLE001
        out.put(repr(e))
    finally:
        eng.dispose()


def test_no_release_after_the_revocation_commits_in_a_loop_on_another_process(scene):
    g = scene.grant("alice", "bob", max_uses=200)
    keyring = scene.keyring()
    with scene.session() as s:
        tokens = [reg.mint(s, scene.token_request(), keyring, now=scene.now).token for _ in range(80)]
    revoked, count, out = CTX.Event(), CTX.Value("i", 0), CTX.Queue()
    p = CTX.Process(target=_release_loop, args=(scene.url, str(scene.home.path), tokens, scene.now.isoformat(),
                                                 revoked, count, 5, out))
    p.start()
    try:
        deadline = time.monotonic() + 120
        while count.value < 4:
            assert time.monotonic() < deadline and p.is_alive(), "the worker made no progress"
            time.sleep(0.005)
        scene.revoke("alice")  # withdrawal: every grant and the cameo, committed when this returns
        revoked.set()
        calls = out.get(timeout=120)
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
    assert isinstance(calls, list), calls
    announced = [c for c in calls if c[0]]
    assert len(announced) == 5
    assert [c for c in announced if c[1]] == []
    assert all({"grant.revoked", "consent.withdrawn"} <= set(c[2]) for c in announced)
    allowed = [c for c in calls if c[1]]
    assert len(allowed) >= 4 and all(c[3] for c in allowed)  # real releases: templates were decrypted
    assert scene.grant_row(g.id).uses == len(allowed) == scene.count("token_uses")
    assert scene.verify_chain().ok
