"""The database is not the root of trust (issue 8). Each test is an attack by someone who can write
to the registry's database but holds no owner key, no token key, no binding key and no vault key;
each was a release (or a forged consent) before the registry kept its root of trust in key files.

Run on SQLite and on PostgreSQL, with the real crypto and the real gate.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, Registry
from sqlalchemy import delete, insert, text, update

from cameo.registry._models import Account, AuditEntry, Cameo, Follow, Generator, GrantRow, Protected, RegistryKey, RevocationRow
from cameo.registry._trust import IntegrityError
from conditioning._errors import GateDenied
from consent import Grant, SigningKey, TokenKeyring, mint_token, new_id, parse_token

FACE = np.linspace(-1, 1, 128, dtype=np.float32)
VOICE = np.linspace(1, -1, 256, dtype=np.float32)


@pytest.fixture
def scene(registry: Registry) -> Registry:
    """alice enrolled (face + voice, "no political content"); a live grant alice -> bob with 3 uses."""
    registry.cameo_id = registry.enroll("alice", {"face": FACE, "voice": VOICE})  # type: ignore[attr-defined]
    registry.grant_id = registry.grant("alice", "bob").id  # type: ignore[attr-defined]
    return registry


def _exec(r: Registry, stmt: Any) -> None:
    """The attacker's raw write: a plain transaction on the database, no cameo code, no keys."""
    with r.engine.begin() as conn:
        conn.execute(stmt)


def _release_codes(r: Registry, tokens: list[str]) -> set[str]:
    with pytest.raises(GateDenied) as e:
        r.gate(vault=True).decide_release(tokens, generator_id=GENERATOR, request=r.request(), now=r.now)
    return {x.code for x in e.value.reasons}


def _alerts(r: Registry) -> list[dict[str, Any]]:
    with r.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(
            text("SELECT event, subject, detail FROM audit_log WHERE event = 'registry:integrity:alert'"))]


# -- forged release ---------------------------------------------------------------------------------
def test_a_token_key_inserted_in_the_database_signs_nothing(scene):
    """registry_keys is a published list, not a keyring: the gate's keys come from the key files."""
    mallory = SigningKey.generate()
    _exec(scene, insert(RegistryKey).values(kid=mallory.key_id, purpose="token", public_key=mallory.public.raw,
                                            status="active", created_at="2026-01-01T00:00:00Z"))
    forged, _ = mint_token(TokenKeyring(mallory), issuer="cameo-registry-test", jti="tok_forged", owner="alice",
                           audience=GENERATOR, grant_id=scene.grant_id, grantee="bob",
                           request_digest=scene.request().digest, purpose="generate", modalities=("face", "voice"),
                           now=scene.now, ttl=timedelta(minutes=5))
    assert _release_codes(scene, [forged]) == {"token.signature"}
    assert scene.grant_row(scene.grant_id).uses == 0


def test_a_grant_row_with_an_empty_envelope_releases_nothing(scene):
    """The gate verifies the owner's signature on the grant at every release (not only at submit)."""
    tok = scene.token()
    _exec(scene, update(GrantRow).where(GrantRow.id == scene.grant_id).values(envelope=b"{}"))
    assert _release_codes(scene, [tok]) == {"state.tampered"}
    assert any(a["event"] == "registry:integrity:alert" for a in _alerts(scene))


def test_a_grant_to_someone_else_forged_into_the_database_releases_nothing(scene, make_registry):
    """A grants row alice -> dave whose envelope is another grant of alice's (signed, but not this one)."""
    r = scene
    real = r.make_grant("alice", "carol")  # signed by alice, never submitted
    tok = r.token()
    _exec(r, update(GrantRow).where(GrantRow.id == r.grant_id).values(envelope=real.to_bytes()))
    assert _release_codes(r, [tok]) == {"state.tampered"}


# -- key swap -----------------------------------------------------------------------------------------
def test_a_swapped_account_key_verifies_no_grant_and_mints_nothing(scene):
    r = scene
    mallory = SigningKey.generate()
    _exec(r, update(Account).where(Account.handle == "alice").values(public_key=mallory.public.raw,
                                                                       key_id=mallory.key_id))
    from cameo.registry import _services as reg
    forged = Grant.create(mallory, id=new_id("grant"), owner="alice", owner_key=mallory.key_id, grantee="bob",
                          grantee_key=r.keys["bob"].key_id, modalities=("face", "voice"), purposes=("generate",),
                          generators=(GENERATOR,), created=r.now, not_after=r.now + timedelta(days=1), max_uses=9)
    with pytest.raises(IntegrityError) as e, r.session() as s:
        reg.submit_grant(s, forged.to_bytes(), now=r.now)
    assert e.value.exit_code == 3 and e.value.reasons[0].code == "account.binding"
    minted = r.mint()  # bob asks for a token against alice's (now unbound) key
    assert minted.denied is not None and {x.code for x in minted.denied.reasons} == {"account.binding"}


def test_a_swapped_key_cannot_release_an_existing_grant(scene):
    r = scene
    tok = r.token()
    mallory = SigningKey.generate()
    _exec(r, update(Account).where(Account.handle == "alice").values(public_key=mallory.public.raw,
                                                                       key_id=mallory.key_id))
    assert _release_codes(r, [tok]) == {"state.tampered"}


def test_an_account_inserted_by_hand_is_no_account(registry):
    from cameo.registry import _services as reg
    k = SigningKey.generate()
    _exec(registry, insert(Account).values(id="acc_x", handle="dave", key_id=k.key_id, public_key=k.public.raw,
                                           created_at="2026-01-01T00:00:00Z"))
    with registry.session() as s, pytest.raises(IntegrityError):
        reg.account_key(s, reg.get_account(s, "dave"))


# -- silent edits of unsigned state ------------------------------------------------------------------
def test_unrevoking_a_grant_by_hand_is_a_denial_with_an_alert(scene):
    r = scene
    tok = r.token()
    r.revoke("alice", r.grant_id)
    _exec(r, update(GrantRow).values(revoked_at=None))
    _exec(r, delete(RevocationRow))
    assert _release_codes(r, [tok]) == {"state.tampered"}
    alerts = _alerts(r)
    assert alerts and alerts[-1]["subject"] == r.ids["alice"]
    # and minting against it is refused too
    minted = r.mint()
    assert minted.denied is not None and "state.tampered" in {x.code for x in minted.denied.reasons}


def test_refilling_an_exhausted_grant_by_hand_is_a_denial(scene):
    r = scene
    toks = [r.token() for _ in range(4)]
    for t in toks[:3]:
        r.gate(vault=True).decide_release([t], generator_id=GENERATOR, request=r.request(), now=r.now)
    assert _release_codes(r, [toks[3]]) == {"grant.exhausted"}
    _exec(r, update(GrantRow).values(uses=0))
    assert _release_codes(r, [toks[3]]) == {"state.tampered"}


def test_raising_max_uses_or_not_after_columns_changes_nothing(scene):
    """The use limit and the expiry are read from the owner-signed grant, not from columns."""
    r = scene
    ends = r.now + timedelta(days=7)  # the signed grant's not_after
    late_tok = r.token(now=ends - timedelta(minutes=1), ttl=timedelta(hours=1))
    toks = [r.token() for _ in range(4)]
    _exec(r, update(GrantRow).values(max_uses=1_000_000, not_after="2999-01-01T00:00:00Z"))
    with pytest.raises(GateDenied) as e:
        r.gate(vault=True).decide_release([late_tok], generator_id=GENERATOR, request=r.request(),
                                          now=ends + timedelta(seconds=1))
    assert {x.code for x in e.value.reasons} == {"grant.expired"}
    for t in toks[:3]:
        r.gate(vault=True).decide_release([t], generator_id=GENERATOR, request=r.request(), now=r.now)
    assert _release_codes(r, [toks[3]]) == {"grant.exhausted"}


def test_reactivating_a_withdrawn_cameo_by_hand_is_a_denial(scene):
    r = scene
    tok = r.token()
    r.revoke("alice")  # withdrawal: every grant revoked, the cameo withdrawn
    _exec(r, update(GrantRow).values(revoked_at=None))
    _exec(r, update(Cameo).values(status="active"))
    assert _release_codes(r, [tok]) == {"state.tampered"}


def test_dropping_restrictions_by_hand_does_not_drop_them_from_the_bundle(scene):
    r = scene
    _exec(r, update(Cameo).values(restrictions="[]"))
    with r.gate(vault=True).release(r.request(), [r.token()], generator_id=GENERATOR, now=r.now) as b:
        assert b.restrictions == ("no political content",)


def test_a_consent_record_swapped_for_another_signed_one_is_a_denial(scene):
    """Even a record alice really signed, if it is not the one the cameo row was sealed with."""
    from consent import ConsentRecord

    r = scene
    other = ConsentRecord.create(r.keys["alice"], id=new_id("consent"), owner="alice",
                                 owner_key=r.keys["alice"].key_id, purposes=("generate", "remix"),
                                 modalities=("face", "voice"), audience="everyone", restrictions=(), templates=(),
                                 adult_attested=True, created=r.now, expires=None)
    tok = r.token()
    _exec(r, update(Cameo).values(consent_envelope=other.to_bytes(), consent_digest=other.digest))
    assert _release_codes(r, [tok]) == {"state.tampered"}


def test_a_template_swapped_within_the_cameo_is_not_released(scene):
    """Templates must be exactly what the consent record commits to (digest, modality, encoder)."""
    r = scene
    with r.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, modality, nonce, ciphertext FROM templates")).all()
    face = next(x for x in rows if x.modality == "face")
    voice = next(x for x in rows if x.modality == "voice")
    tok = r.token()
    # the voice ciphertext moved onto the face row: the AAD (modality) already refuses it
    _exec(r, update(__import__("cameo.registry._models", fromlist=["Template"]).Template)
          .where(text(f"id = '{face.id}'")).values(nonce=voice.nonce, ciphertext=voice.ciphertext))
    assert _release_codes(r, [tok]) == {"vault.integrity"}


# -- the audit chain ----------------------------------------------------------------------------------
def _plain_macs(rows: list[Any]) -> list[str]:
    """What the attacker can compute without the audit key: each entry's tag as plain SHA-256 of its
    canonical bytes (the MAC's framing, unkeyed)."""
    from consent import log_entry_bytes

    return [hashlib.sha256(b"cameo.audit.v2 " + log_entry_bytes(entry_id=r.entry_id, ts=r.ts, event=r.event,
                                                               actor=r.actor, subject=r.subject, detail=r.detail)
                           ).hexdigest() for r in rows]


def test_entries_rewritten_without_the_audit_key_do_not_verify(scene):
    """The denial and the revocation removed, the rest rewritten with tags anyone could compute:
    the first rewritten entry does not verify."""
    r = scene
    tok = r.token()
    r.revoke("alice", r.grant_id)
    with pytest.raises(GateDenied):
        r.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=r.request(), now=r.now)
    assert r.verify_chain().ok
    with r.engine.connect() as conn:
        kept = [x for x in conn.execute(text("SELECT * FROM audit_log ORDER BY seq")).all()
                if not x.event.endswith(":denied") and "revoke" not in x.event]
    tags = _plain_macs(kept)
    with r.engine.begin() as conn:
        conn.execute(delete(AuditEntry))
        for x, h in zip(kept, tags):
            conn.execute(insert(AuditEntry).values(seq=x.seq, entry_id=x.entry_id, ts=x.ts, event=x.event,
                                                   actor=x.actor, subject=x.subject, detail=x.detail, hash=h))
    report = r.verify_chain()
    assert not report.ok and report.first_bad == kept[0].seq


# -- follows, generators and the protected list -------------------------------------------------------
def test_follows_inserted_by_hand_do_not_make_mutuals(make_registry):
    from cameo.registry import _app
    from cameo.registry import _services as reg
    from cameo._errors import Denied
    from conftest import PASSPHRASE

    r = make_registry()
    r.enroll("alice", {"face": FACE, "voice": VOICE}, audience="mutuals")
    for a, b in (("alice", "bob"), ("bob", "alice")):
        _exec(r, insert(Follow).values(follower_id=r.ids[a], followee_id=r.ids[b], created_at="2026-01-01T00:00:00Z"))
    with pytest.raises(Denied) as e, r.session() as s:
        reg.submit_grant(s, r.make_grant("alice", "bob").to_bytes(), now=r.now)
    assert {x.code for x in e.value.reasons} == {"consent.audience"}
    _exec(r, delete(Follow))
    for a, b in (("alice", "bob"), ("bob", "alice")):
        _app.follow(r.home, a, b, passphrase=PASSPHRASE, now=r.now)
    r.grant("alice", "bob")  # signed follows both ways: mutuals
    r.gate(vault=True).decide_release([r.token()], generator_id=GENERATOR, request=r.request(), now=r.now)
    # a follow envelope moved to the other row (signed, but by the other follower) counts for nothing,
    # at the gate too (the token was minted while the follows were intact)
    tok = r.token()
    with r.engine.connect() as conn:
        env = conn.execute(text("SELECT envelope FROM follows WHERE follower_id = :a"), {"a": r.ids["alice"]}).scalar()
    _exec(r, update(Follow).where(Follow.follower_id == r.ids["bob"]).values(envelope=env))
    with pytest.raises(GateDenied) as e2:
        r.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=r.request(), now=r.now)
    assert "consent.audience" in {x.code for x in e2.value.reasons}


def test_a_follow_needs_the_followers_own_key(registry):
    from cameo.registry import _services as reg
    from consent import Follow as FollowDoc
    from consent import KeyMismatch, SignatureInvalid

    doc = FollowDoc.create(registry.keys["bob"], id=new_id("follow"), follower="alice",
                           follower_key=registry.keys["alice"].key_id, followee="bob", created=registry.now)
    with pytest.raises((KeyMismatch, SignatureInvalid)), registry.session() as s:
        reg.follow(s, doc.to_bytes(), now=registry.now)


def test_an_edited_generator_row_is_refused(registry):
    from cameo.registry import _services as reg
    evil = base64.b64encode(b"\x01" * 32).decode()
    _exec(registry, update(Generator).where(Generator.id == GENERATOR).values(adapter="sealed",
                                                                             config='{"public_key_b64": "%s"}' % evil))
    with registry.session() as s, pytest.raises(IntegrityError) as e:
        reg.get_generator(s, GENERATOR)
    assert e.value.exit_code == 3


def test_a_protected_entry_inserted_by_hand_protects_nobody(registry):
    """The protected list is the operator's: only entries signed with the binding key count."""
    from cameo.registry._cameos import TemplateInput, add_protected, load_protected

    vault = registry.home.vault()
    with registry.session() as s:
        add_protected(s, vault, label="estate of x", template=TemplateInput("face", "test-encoder-v1", FACE),
                      now=registry.now)
    with registry.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM protected")).one()
    _exec(registry, insert(Protected).values(id="prot_forged", label="not alice", modality="face",
                                             encoder_id="test-encoder-v1", wrapped_dek=row.wrapped_dek,
                                             nonce=row.nonce, ciphertext=row.ciphertext,
                                             created_at="2026-01-01T00:00:00Z", binding=row.binding))
    with registry.session() as s:
        labels = [x[0] for x in load_protected(s, vault)]
    assert labels == ["estate of x"]


# -- token keys from files -------------------------------------------------------------------------
def test_a_retired_token_key_verifies_only_what_it_signed_before_retiring(registry):
    old = SigningKey.generate()
    cut = registry.now
    ring = TokenKeyring(None, [old.public], retired_at={old.key_id: cut})
    kw: dict[str, Any] = dict(issuer="r", owner="alice", audience=GENERATOR, grant_id="grant_x", grantee="bob",
                              request_digest="sha256:" + "0" * 64, purpose="generate", modalities=("face",),
                              ttl=timedelta(minutes=5))
    before, _ = mint_token(TokenKeyring(old), jti="tok_a", now=cut - timedelta(seconds=1), **kw)
    after, _ = mint_token(TokenKeyring(old), jti="tok_b", now=cut, **kw)
    assert parse_token(before, ring).jti == "tok_a"
    from consent import SignatureInvalid

    with pytest.raises(SignatureInvalid):
        parse_token(after, ring)


def test_the_gate_keyring_comes_from_the_key_files(registry):
    """Deleting or rewriting registry_keys rows changes nothing about which tokens verify."""
    registry.enroll("alice", {"face": FACE, "voice": VOICE})
    registry.grant("alice", "bob")
    tok = registry.token()
    _exec(registry, delete(RegistryKey))
    d = registry.gate().check(registry.request(), tok, generator_id=GENERATOR, now=registry.now)
    assert d.allowed
