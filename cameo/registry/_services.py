"""Registry services: accounts, follows, grants, revocations and token minting.

Every function takes the caller's Session and ``now`` and never commits. A function that *denies*
returns the denial (after writing its audit entry) instead of raising, so the caller can commit the
audit record; bad input raises before anything is written.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent import (
    Allowed,
    ConsentError,
    ConsentRecord,
    Follow as FollowDoc,
    Denied,
    Grant,
    GrantState,
    PermissionToken,
    Reason,
    Revocation,
    TokenKeyring,
    TokenRequest,
    VerificationError,
    VerifyKey,
    audience_allows,
    evaluate_grant,
    fmt_time,
    mint_token,
)

from . import _audit as audit
from ._events import EventTag, Outcome
from .._errors import DuplicateDocument, DuplicateHandle, InvalidDuration, UnknownAccount, UnknownGenerator, UnknownGrant
from ._home import check_handle
from ._models import Account, Cameo, Follow, Generator, GrantRow, Meta, RegistryKey, RevocationRow
from ._trust import IntegrityError, trust_of

DEFAULT_TOKEN_TTL = timedelta(minutes=5)
TOKEN_REQUEST_WINDOW = timedelta(minutes=5)


def parse_duration(text: str, *, max_days: int = 3650) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w``: positive and at most ``max_days``."""
    import re

    m = re.fullmatch(r"\s*(\d{1,7})\s*([smhdw])\s*", text or "")
    if not m:
        raise InvalidDuration(f"invalid duration {text[:20]!r}: use a number and a unit, e.g. 90s, 15m, 12h, 7d, 2w")
    n, unit = int(m.group(1)), m.group(2)
    d = timedelta(**{"s": {"seconds": n}, "m": {"minutes": n}, "h": {"hours": n}, "d": {"days": n},
                     "w": {"weeks": n}}[unit])
    if d <= timedelta(0) or d > timedelta(days=max_days):
        raise InvalidDuration(f"duration {text!r} is out of range (1 second to {max_days} days)")
    return d


# -- registry setup ---------------------------------------------------------------------------------
def initialise(session: Session, *, token_key: VerifyKey, binding_key: VerifyKey, now: datetime) -> str:
    """Record the registry's id and the public halves of its keys (published for auditors; the gate
    never reads them from here: its keys come from the key files); register the demonstration
    generator. Idempotent."""
    audit.init_audit(session)
    meta = session.get(Meta, "registry_id")
    if meta is None:
        meta = Meta(key="registry_id", value=f"cameo-registry-{uuid.uuid4().hex[:12]}")
        session.add(meta)
        audit.append(session, EventTag.REGISTRY_INIT, now=now, detail={"registry_id": meta.value})
    if session.get(RegistryKey, token_key.key_id) is None:
        session.add(RegistryKey(kid=token_key.key_id, purpose="token", public_key=token_key.raw, status="active",
                                created_at=fmt_time(now)))
        audit.append(session, EventTag.REGISTRY_KEY_ADD, now=now, detail={"kid": token_key.key_id, "purpose": "token"})
    if session.get(RegistryKey, binding_key.key_id) is None:
        session.add(RegistryKey(kid=binding_key.key_id, purpose="binding", public_key=binding_key.raw,
                                status="active", created_at=fmt_time(now)))
        audit.append(session, EventTag.REGISTRY_KEY_ADD, now=now, detail={"kid": binding_key.key_id, "purpose": "binding"})
    if session.get(Generator, "studio-v1") is None:
        register_generator(session, "studio-v1", adapter="demo", config={}, public_key=None, now=now)
    session.flush()
    return meta.value


LIKENESS_VERSION = "likeness_version"


def bump_likeness_version(session: Session) -> None:
    """Mark the set of screened likenesses as changed (in the transaction of every enrollment,
    deletion, withdrawal and protected-list entry): every gate's screener reloads its directory
    before its next decision. A fresh random value, so concurrent writers never collide."""
    row = session.get(Meta, LIKENESS_VERSION)
    if row is None:
        session.add(Meta(key=LIKENESS_VERSION, value=uuid.uuid4().hex))
    else:
        row.value = uuid.uuid4().hex
    session.flush()


def registry_id(session: Session) -> str:
    meta = session.get(Meta, "registry_id")
    return meta.value if meta else "cameo-registry"


# -- accounts -----------------------------------------------------------------------------------------
def get_account(session: Session, handle: str) -> Account:
    check_handle(handle)
    acc = session.execute(select(Account).where(Account.handle == handle)).scalar_one_or_none()
    if acc is None:
        raise UnknownAccount(f"no account named {handle!r}")
    return acc


def account_key(session: Session, acc: Account) -> VerifyKey:
    """The account's public key, only if the registry's binding key bound it to this account
    (raises :class:`IntegrityError` for a swapped or inserted key)."""
    return trust_of(session).account_key(acc.id, acc.handle, acc.key_id, acc.public_key, acc.binding)


def create_account(session: Session, handle: str, public_key: VerifyKey, *, now: datetime) -> Account:
    check_handle(handle)
    if session.execute(select(Account.id).where(Account.handle == handle)).first() is not None:
        raise DuplicateHandle(f"the handle {handle!r} is taken")
    aid = f"acc_{uuid.uuid4().hex}"
    acc = Account(id=aid, handle=handle, key_id=public_key.key_id, public_key=public_key.raw,
                  created_at=fmt_time(now), binding=trust_of(session).bind_account(aid, handle, public_key.raw))
    session.add(acc)
    session.flush()
    audit.append(session, EventTag.ACCOUNT_CREATE, now=now, actor=acc.id, subject=acc.id,
                 detail={"key_id": public_key.key_id})
    return acc


def follow(session: Session, data: bytes, *, now: datetime) -> FollowDoc:
    """Store a follower-signed follow (verified against the follower's bound key)."""
    a = get_account(session, FollowDoc.peek_signer(data))
    doc = FollowDoc.from_bytes(data, account_key(session, a))
    from consent import KeyMismatch

    if doc.follower_key != a.key_id:
        raise KeyMismatch("the follow names a key other than the follower's on file")
    b = get_account(session, doc.followee)
    if abs(now - doc.created) > TOKEN_REQUEST_WINDOW:
        raise InvalidDuration("the follow is not fresh (older than 5 minutes or from the future)")
    row = session.get(Follow, (a.id, b.id))
    if row is None:
        session.add(Follow(follower_id=a.id, followee_id=b.id, created_at=fmt_time(now), envelope=data))
        audit.append(session, EventTag.ACCOUNT_FOLLOW, now=now, actor=a.id, subject=b.id,
                     detail={"followee": b.id, "digest": doc.digest})
    return doc


def _follow_ok(session: Session, follower: Account, followee: Account) -> bool:
    row = session.get(Follow, (follower.id, followee.id))
    if row is None or row.envelope is None:
        return False
    try:
        doc = FollowDoc.from_bytes(row.envelope, account_key(session, follower))
    except (ConsentError, IntegrityError):
        return False  # an unsigned or forged follow row counts for nothing
    return doc.follower == follower.handle and doc.followee == followee.handle


def is_mutual(session: Session, a_id: str, b_id: str) -> bool:
    """Both follows exist and each is signed by its follower (a row inserted by hand counts for nothing)."""
    a, b = session.get(Account, a_id), session.get(Account, b_id)
    if a is None or b is None:
        return False
    return _follow_ok(session, a, b) and _follow_ok(session, b, a)


# -- generators ---------------------------------------------------------------------------------------
def register_generator(session: Session, gen_id: str, *, adapter: str, config: dict[str, Any],
                       public_key: bytes | None, now: datetime) -> Generator:
    from consent import GENERATOR_RE

    from .._errors import BadInput

    if not GENERATOR_RE.fullmatch(gen_id):
        raise BadInput(f"invalid generator id {gen_id[:64]!r}: lower-case letters, digits, '.', '_' and '-'")
    if session.get(Generator, gen_id) is not None:
        raise BadInput(f"generator {gen_id!r} is already registered")
    cfg = json.dumps(config, sort_keys=True)
    g = Generator(id=gen_id, adapter=adapter, config=cfg, public_key=public_key, created_at=fmt_time(now),
                  binding=trust_of(session).sign_binding(
                      "generator", trust_of(session).generator_statement(gen_id, adapter, cfg, public_key)))
    session.add(g)
    audit.append(session, EventTag.REGISTRY_GENERATOR_ADD, now=now, detail={"generator": gen_id, "adapter": adapter})
    return g


def get_generator(session: Session, gen_id: str) -> Generator:
    g = session.get(Generator, gen_id)
    if g is None:
        raise UnknownGenerator(f"no generator registered as {gen_id[:64]!r}")
    # its adapter, config and sealing key are the operator's: a row edited by hand is refused
    trust_of(session).check_generator(g.id, g.adapter, g.config, g.public_key, g.binding)
    return g


# -- consent ------------------------------------------------------------------------------------------
def live_consent(session: Session, owner: Account) -> tuple[Cameo | None, ConsentRecord | None]:
    """The owner's cameo and its consent record, verified: the record under the owner's bound key,
    the row's status under its state MAC. A row altered outside cameo raises IntegrityError."""
    cameo = session.execute(select(Cameo).where(Cameo.account_id == owner.id)).scalar_one_or_none()
    if cameo is None:
        return None, None
    record = ConsentRecord.from_bytes(cameo.consent_envelope, account_key(session, owner))
    if (record.digest != cameo.consent_digest or record.owner != owner.handle
            or not trust_of(session).cameo_ok(cameo.state_mac, cameo.id, owner.id, cameo.status,
                                              cameo.consent_digest)):
        raise IntegrityError(f"{owner.handle}'s cameo record was altered outside cameo")
    return cameo, record


def grant_row_ok(session: Session, row: GrantRow) -> bool:
    """The grant row's mutable state (uses, revocation) carries the registry's MAC."""
    return trust_of(session).grant_ok(row.state_mac, row.id, row.digest, row.owner_id, row.grantee_id, row.uses,
                                      row.revoked_at)


def set_grant_state(session: Session, row_id: str, *, uses: int | None = None, revoked_at: str | None = None) -> None:
    """Update a grant's uses and/or revocation with a fresh MAC (every change to them goes through here).
    The row is re-read under its lock, so the MAC covers the state committed by any concurrent gate
    decision (not a copy this session loaded earlier)."""
    row = session.get(GrantRow, row_id, with_for_update=True, populate_existing=True)
    assert row is not None
    if uses is not None:
        row.uses = uses
    if revoked_at is not None:
        row.revoked_at = revoked_at
    row.state_mac = trust_of(session).grant_mac(row.id, row.digest, row.owner_id, row.grantee_id, row.uses,
                                                row.revoked_at)
    session.flush()


def revoke_grants(session: Session, owner: Account, *, grant_id: str | None, stamp: str) -> list[str]:
    """Revoke one grant of ``owner`` or all of them (grant_id None); returns the ids newly revoked."""
    q = select(GrantRow.id).where(GrantRow.owner_id == owner.id, GrantRow.revoked_at.is_(None))
    if grant_id is not None:
        q = q.where(GrantRow.id == grant_id)
    ids = list(session.execute(q.with_for_update()).scalars())
    for gid in ids:
        set_grant_state(session, gid, revoked_at=stamp)
    return ids


def integrity_alert(session: Session, *, now: datetime, subject: str | None, what: str, detail: dict[str, Any]) -> None:
    """Record that a row did not verify (written with the denial it caused)."""
    audit.append(session, EventTag.REGISTRY_INTEGRITY_ALERT, now=now, subject=subject, detail={"what": what, **detail})


def submit_grant(session: Session, data: bytes, *, now: datetime) -> Grant:
    """Verify an owner-signed grant against the owner's key on file and store it."""
    owner = get_account(session, Grant.peek_signer(data))
    grant = Grant.from_bytes(data, account_key(session, owner))
    grantee = get_account(session, grant.grantee)
    from consent import KeyMismatch

    if grant.owner_key != owner.key_id:
        raise KeyMismatch("the grant names an owner key other than the one on file")
    if grant.grantee_key != grantee.key_id:
        raise KeyMismatch("the grant names a grantee key other than the one on file")
    for g in grant.generators:
        get_generator(session, g)
    if grant.not_after <= now:
        raise InvalidDuration("the grant would already have expired")
    if session.get(GrantRow, grant.id) is not None:
        raise DuplicateDocument("a grant with this id exists")
    cameo, consent = live_consent(session, owner)
    if consent is not None:
        aud = audience_allows(consent.audience, owner=owner.handle, grantee=grantee.handle,
                              mutual=is_mutual(session, owner.id, grantee.id), explicit_grant=True)
        if isinstance(aud, Denied):
            from .._errors import Denied as DeniedError

            raise DeniedError(aud.reasons)
    session.add(GrantRow(id=grant.id, owner_id=owner.id, grantee_id=grantee.id, envelope=data, digest=grant.digest,
                         generators=json.dumps(list(grant.generators)), not_after=fmt_time(grant.not_after),
                         max_uses=grant.max_uses, uses=0, revoked_at=None, created_at=fmt_time(now),
                         state_mac=trust_of(session).grant_mac(grant.id, grant.digest, owner.id, grantee.id, 0, None)))
    audit.append(session, EventTag.CONSENT_GRANT_CREATE, now=now, actor=owner.id, subject=owner.id,
                 detail={"grant": grant.id, "digest": grant.digest, "grantee": grantee.id,
                         "generators": list(grant.generators), "max_uses": grant.max_uses,
                         "not_after": fmt_time(grant.not_after)})
    session.flush()
    return grant


def submit_revocation(session: Session, data: bytes, *, now: datetime) -> dict[str, Any]:
    """Verify an owner-signed revocation and apply it: one grant, or all consent (withdrawal)."""
    owner = get_account(session, Revocation.peek_signer(data))
    rev = Revocation.from_bytes(data, account_key(session, owner))
    if session.get(RevocationRow, rev.id) is not None:  # a replayed document: bad input, not a crash
        raise DuplicateHandle("a revocation with this id was already applied")
    stamp = fmt_time(now)
    if rev.scope == "grant":
        row = session.get(GrantRow, rev.target)
        if row is None or row.owner_id != owner.id:
            raise UnknownGrant(f"{owner.handle} has no grant {rev.target[:64]!r}")
        revoked = revoke_grants(session, owner, grant_id=row.id, stamp=stamp)
        event = EventTag.CONSENT_GRANT_REVOKE
    else:
        revoked = revoke_grants(session, owner, grant_id=None, stamp=stamp)
        cameo = session.execute(select(Cameo).where(Cameo.account_id == owner.id)).scalar_one_or_none()
        if cameo is not None:
            cameo.status = "withdrawn"
            cameo.state_mac = trust_of(session).cameo_mac(cameo.id, owner.id, "withdrawn", cameo.consent_digest)
            bump_likeness_version(session)
        event = EventTag.CONSENT_WITHDRAW
    session.add(RevocationRow(id=rev.id, owner_id=owner.id, scope=rev.scope, target=rev.target, envelope=data,
                              created_at=stamp))
    audit.append(session, event, now=now, actor=owner.id, subject=owner.id,
                 detail={"revocation": rev.id, "digest": rev.digest, "scope": rev.scope, "revoked": revoked})
    session.flush()
    return {"revocation_id": rev.id, "scope": rev.scope, "revoked_grants": revoked}


def grants_of(session: Session, owner: Account) -> list[dict[str, Any]]:
    rows = session.execute(select(GrantRow, Account.handle).join(Account, Account.id == GrantRow.grantee_id)
                           .where(GrantRow.owner_id == owner.id).order_by(GrantRow.created_at)).all()
    return [{"id": g.id, "grantee": h, "generators": json.loads(g.generators), "not_after": g.not_after,
             "uses": g.uses, "max_uses": g.max_uses, "revoked_at": g.revoked_at} for g, h in rows]


# -- tokens -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Minted:
    token: str = ""
    claims: PermissionToken | None = None
    denied: Denied | None = None


def _grant_state(session: Session, row: GrantRow, owner: Account, grantee: Account, cameo: Cameo | None) -> GrantState:
    return GrantState(revoked=row.revoked_at is not None, uses=row.uses,
                      consent_withdrawn=cameo is not None and cameo.status != "active",
                      mutual=is_mutual(session, owner.id, grantee.id))


def mint(session: Session, request_data: bytes, keyring: TokenKeyring, *, now: datetime,
         ttl: timedelta = DEFAULT_TOKEN_TTL) -> Minted:
    """Mint a permission token for a grantee's signed token request, against a grant that verifies now.

    Raises on malformed input and unknown handles; returns a denial (already audited) otherwise.
    """
    # 1. the grantee proves possession of the key on file by signing the request
    grantee = get_account(session, TokenRequest.peek_signer(request_data))
    try:
        req = TokenRequest.from_bytes(request_data, account_key(session, grantee))
    except VerificationError:
        # no proof of possession: a denial like any other, recorded for the owner the request names
        return _deny_unproven(session, request_data, grantee, now=now)
    owner = get_account(session, req.owner)
    get_generator(session, req.generator)
    reasons: list[Reason] = []
    if req.grantee_key != grantee.key_id:
        reasons.append(Reason("request.key", "the token request names a key other than the grantee's on file"))
    # 2. the request is fresh (bounded replay window)
    if abs(now - req.created) > TOKEN_REQUEST_WINDOW:
        reasons.append(Reason("request.stale", "the token request is not fresh (older than 5 minutes or from the future)"))
    # 3. find the grant: the one named, or of the live grants owner -> grantee for this generator
    #    the one that ends soonest (then the newest): a grant about to lapse is used before one that
    #    would outlive it, and the token names exactly the grant a revocation must reach
    q = select(GrantRow).where(GrantRow.owner_id == owner.id, GrantRow.grantee_id == grantee.id)
    if req.grant_id:
        q = q.where(GrantRow.id == req.grant_id)
    rows = list(session.execute(q.order_by(GrantRow.not_after.asc(), GrantRow.created_at.desc())).scalars())
    if req.grant_id and not rows:
        raise UnknownGrant(f"{owner.handle} has no grant {req.grant_id[:64]!r} for {grantee.handle}")
    try:
        cameo, consent = live_consent(session, owner)
        owner_key = account_key(session, owner)
    except IntegrityError as e:
        return _deny_tampered(session, req, owner, grantee, e, now=now)
    chosen: tuple[GrantRow, Grant] | None = None
    best: Denied | None = None
    for row in rows:
        # 4. the grant verifies *now* under the owner's bound key, and its state under the registry's MAC
        try:
            grant = Grant.from_bytes(row.envelope, owner_key)
        except ConsentError as e:
            return _deny_tampered(session, req, owner, grantee,
                                  IntegrityError(f"grant {row.id} is not signed by its owner ({e})"), now=now)
        if grant.id != row.id or grant.digest != row.digest or not grant_row_ok(session, row):
            return _deny_tampered(session, req, owner, grantee,
                                  IntegrityError(f"grant {row.id}'s record was altered outside cameo"), now=now)
        decision = evaluate_grant(grant, _grant_state(session, row, owner, grantee, cameo), consent=consent,
                                  grantee=grantee.handle, generator=req.generator, purpose=req.purpose,
                                  modalities=grant.modalities, now=now)
        if isinstance(decision, Allowed):
            chosen = (row, grant)
            break
        if best is None:  # (a Denied is falsy: compare with None, or its reasons are lost)
            best = decision
    if chosen is None:
        reasons.extend(best.reasons if best is not None
                       else [Reason("grant.none", f"{owner.handle} has granted {grantee.handle} nothing")])
    detail: dict[str, Any] = {"request": req.id, "generator": req.generator, "request_digest": req.request_digest,
                              "grantee": grantee.id}
    if reasons:
        detail["reasons"] = [r.as_dict() for r in reasons]
        audit.append(session, EventTag.TOKEN_MINT, outcome=Outcome.DENIED, now=now, actor=grantee.id, subject=owner.id, detail=detail)
        return Minted(denied=Denied(tuple(reasons)))
    assert chosen is not None
    row, grant = chosen
    token, claims = mint_token(keyring, issuer=registry_id(session), jti=f"tok_{uuid.uuid4().hex}",
                               owner=owner.handle, audience=req.generator, grant_id=grant.id, grantee=grantee.handle,
                               request_digest=req.request_digest, purpose=req.purpose, modalities=grant.modalities,
                               now=now, ttl=ttl)
    detail.update({"token": claims.jti, "grant": grant.id, "expires": fmt_time(claims.expires)})
    audit.append(session, EventTag.TOKEN_MINT, outcome=Outcome.ALLOWED, now=now, actor=grantee.id, subject=owner.id, detail=detail)
    return Minted(token=token, claims=claims)


def _deny_tampered(session: Session, req: TokenRequest, owner: Account, grantee: Account, e: IntegrityError, *,
                   now: datetime) -> Minted:
    reasons = e.reasons
    integrity_alert(session, now=now, subject=owner.id, what="token:mint", detail={"reason": str(e)})
    audit.append(session, EventTag.TOKEN_MINT, outcome=Outcome.DENIED, now=now, actor=grantee.id, subject=owner.id,
                 detail={"request": req.id, "generator": req.generator, "request_digest": req.request_digest,
                         "grantee": grantee.id, "reasons": [r.as_dict() for r in reasons]})
    return Minted(denied=Denied(tuple(reasons)))


def _deny_unproven(session: Session, request_data: bytes, grantee: Account, *, now: datetime) -> Minted:
    """A token request whose signature does not verify under the grantee's key on file."""
    from consent import Envelope, MalformedDocument, strict_json_loads

    claimed = strict_json_loads(Envelope.from_bytes(request_data).body, "token request")
    named = claimed.get("owner") if isinstance(claimed, dict) else None
    if not isinstance(named, str):
        raise MalformedDocument("the token request names no owner")
    owner = get_account(session, named)
    reasons = (Reason("request.signature", "the token request is not signed by the grantee's key on file"),)
    audit.append(session, EventTag.TOKEN_MINT, outcome=Outcome.DENIED, now=now, actor=None, subject=owner.id,
                 detail={"grantee": grantee.id, "reasons": [r.as_dict() for r in reasons]})
    return Minted(denied=Denied(reasons))

