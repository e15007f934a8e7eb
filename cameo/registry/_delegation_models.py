"""Device delegations at rest (table ``device_delegations``) and the registry services over them:
an owner's offer (``cameo web``), the one-time claim by a browser's device key, the live check of
a device on every request, the page's narrowing acts, and signing devices out.

What the registry stores can sign nothing: the owner-signed delegation, the ticket-signed claim
and the device's *public* key (see :mod:`consent._delegation` for the chain). Every use re-verifies
the chain under the owner's bound key, and the row's mutable state (claimed, signed out) carries
the registry's state MAC, so a database-write attacker cannot un-revoke a device or re-open a
burnt ticket. Functions take the caller's Session and ``now``, and never commit.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from consent import (
    ConsentError,
    Denied,
    DeviceClaim,
    DeviceDelegation,
    DeviceRevocation,
    KeyMismatch,
    MalformedDocument,
    VerifyKey,
    claim_decision,
    device_decision,
    fmt_time,
    state_mac,
    state_mac_ok,
)
from consent._delegation import FRESHNESS

from .._errors import BadInput, Denied as DeniedError, DuplicateDocument, DuplicateHandle, NotFound, UnknownGrant
from ._models import Account, Base


class DeviceDelegationRow(Base):
    __tablename__ = "device_delegations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)  # the owner-signed DeviceDelegation
    digest: Mapped[str] = mapped_column(String(80))
    claim: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the ticket-signed DeviceClaim
    device_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True, index=True)
    device_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # raw Ed25519 public key
    label: Mapped[str | None] = mapped_column(String(120), nullable=True)  # the browser, as it named itself
    created_at: Mapped[str] = mapped_column(String(32))
    claim_by: Mapped[str] = mapped_column(String(32))
    not_after: Mapped[str] = mapped_column(String(32))
    claimed_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    last_used_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state_mac: Mapped[str] = mapped_column(String(80))


class UnknownDevice(NotFound):
    """No delegation or device with that id (for this owner)."""


def _state(row: DeviceDelegationRow) -> tuple[str | None, ...]:
    key = base64.b64encode(bytes(row.device_key)).decode() if row.device_key else None
    return (row.id, row.digest, row.owner_id, row.device_id, key, row.claimed_at, row.revoked_at)


def _seal(session: Session, row: DeviceDelegationRow) -> None:
    from ._trust import trust_of

    row.state_mac = state_mac(trust_of(session).state_key, "device-delegation", *_state(row))


def _verified(session: Session, row: DeviceDelegationRow) -> tuple[Account, DeviceDelegation]:
    """The row's owner and its delegation, verified under the owner's bound key; the row's state
    under the registry's MAC. A row edited outside cameo raises IntegrityError."""
    from . import _services as reg
    from ._trust import IntegrityError, trust_of

    owner = session.get(Account, row.owner_id)
    if owner is None:
        raise IntegrityError("a device delegation names no account")
    try:
        doc = DeviceDelegation.from_bytes(row.envelope, reg.account_key(session, owner))
    except ConsentError as e:
        raise IntegrityError(f"device delegation {row.id} is not signed by its owner ({e})") from None
    if doc.id != row.id or doc.digest != row.digest or doc.owner != owner.handle or \
            not state_mac_ok(trust_of(session).state_key, row.state_mac, "device-delegation", *_state(row)):
        raise IntegrityError(f"device delegation {row.id}'s record was altered outside cameo")
    return owner, doc


# -- the owner's offer ------------------------------------------------------------------------------
def offer(session: Session, data: bytes, *, now: datetime) -> DeviceDelegation:
    """Store an owner-signed delegation offer (verified against the owner's key on file)."""
    from . import _services as reg

    try:
        owner = reg.get_account(session, DeviceDelegation.peek_signer(data))
        doc = DeviceDelegation.from_bytes(data, reg.account_key(session, owner))
    except MalformedDocument as e:
        raise BadInput(f"malformed delegation: {e}") from e
    if doc.owner_key != owner.key_id:
        raise KeyMismatch("the delegation names an owner key other than the one on file")
    if doc.claim_by <= now or doc.created > now + FRESHNESS:
        raise BadInput("the delegation's sign-in window is not now (check this machine's clock)")
    if session.get(DeviceDelegationRow, doc.id) is not None:
        raise DuplicateDocument("a delegation with this id exists")
    row = DeviceDelegationRow(id=doc.id, owner_id=owner.id, envelope=data, digest=doc.digest,
                              created_at=fmt_time(now), claim_by=fmt_time(doc.claim_by),
                              not_after=fmt_time(doc.not_after), state_mac="")
    _seal(session, row)
    session.add(row)
    session.flush()
    return doc


def open_offer(session: Session, dlg_id: str, *, now: datetime) -> bytes:
    """The owner-signed delegation behind a sign-in link, while the link can be used; otherwise
    Denied with the reason (used, expired, cancelled)."""
    from consent import Reason

    row = session.get(DeviceDelegationRow, dlg_id[:64])
    if row is None:
        raise DeniedError("this sign-in link is not known here (it was never issued by this registry)")
    _, delegation = _verified(session, row)
    reasons = []
    if row.claimed_at is not None:
        reasons.append(Reason("ticket.used", "this sign-in link was already used: a link signs in one browser, once"))
    elif row.revoked_at is not None:
        reasons.append(Reason("ticket.cancelled", "this sign-in link was cancelled"))
    if now >= delegation.claim_by:
        reasons.append(Reason("ticket.expired", f"this sign-in link expired at {fmt_time(delegation.claim_by)}"))
    if reasons:
        raise DeniedError(reasons)
    return bytes(row.envelope)


def peek_claim(data: bytes) -> DeviceClaim:
    """The device key a claim names, before the claim is verified: the route makes the request's
    own signature prove possession of that key first. Raises BadInput on a malformed claim."""
    from consent import Envelope, strict_json_loads

    try:
        body = strict_json_loads(Envelope.from_bytes(data).body, "device claim")
        if not isinstance(body, dict):
            raise MalformedDocument("a device claim is an object")
        return DeviceClaim._from_payload(body, Envelope.from_bytes(data))
    except (MalformedDocument, KeyError) as e:
        raise BadInput(f"malformed device claim: {e}") from None


def claim(session: Session, data: bytes, *, label: str | None, now: datetime) -> tuple[DeviceDelegation, DeviceClaim]:
    """Bind a device key to an offered delegation, once: the claim must verify under the
    delegation's ticket key, before ``claim_by``, for an unclaimed delegation. Burns the ticket."""
    try:
        dlg_id = DeviceClaim.peek_signer(data)
    except ConsentError as e:
        raise BadInput(f"malformed device claim: {e}") from e
    row = session.get(DeviceDelegationRow, dlg_id[:64], with_for_update=True, populate_existing=True)
    if row is None:
        raise DeniedError("this sign-in link is not known here (it was never issued by this registry)")
    _, delegation = _verified(session, row)
    try:
        doc = DeviceClaim.from_bytes(data, delegation.ticket_verify_key)
    except ConsentError:
        raise DeniedError("this sign-in link's proof does not verify (a link is used whole, as printed)") from None
    decision = claim_decision(delegation, doc, claimed=row.claimed_at is not None or row.revoked_at is not None,
                              now=now)
    if isinstance(decision, Denied):
        raise DeniedError(decision.reasons)
    if session.execute(select(DeviceDelegationRow.id).where(DeviceDelegationRow.device_id == doc.device_id)).first():
        raise DuplicateDocument("this device key already claimed a delegation")
    row.claim, row.device_id, row.device_key = data, doc.device_id, doc.device_verify_key.raw
    row.claimed_at, row.last_used_at = fmt_time(now), fmt_time(now)
    row.label = (label or "")[:120] or None
    _seal(session, row)
    session.flush()
    return delegation, doc


# -- devices at work ----------------------------------------------------------------------------------
def live_device(session: Session, device_id: str) -> tuple[DeviceDelegationRow, Account, DeviceDelegation, VerifyKey]:
    """A claimed device: its row, owner, verified delegation and public key (the chain owner ->
    ticket -> device re-verified). Raises UnknownDevice or IntegrityError; liveness is the caller's."""
    from ._trust import IntegrityError

    row = session.execute(select(DeviceDelegationRow).where(DeviceDelegationRow.device_id == device_id[:40])
                          ).scalar_one_or_none()
    if row is None or row.claim is None or row.device_key is None:
        raise UnknownDevice(f"no device {device_id[:40]!r} is signed in here")
    owner, delegation = _verified(session, row)
    try:
        doc = DeviceClaim.from_bytes(row.claim, delegation.ticket_verify_key)
        key = VerifyKey(bytes(row.device_key))
    except ConsentError as e:
        raise IntegrityError(f"device {device_id[:40]}'s claim does not verify ({e})") from None
    if doc.device_key != key.b64() or doc.device_id != row.device_id or doc.delegation != row.id:
        raise IntegrityError(f"device {device_id[:40]}'s record was altered outside cameo")
    return row, owner, delegation, key


def authorize(session: Session, device_id: str, *, handle: str, power: str, now: datetime) -> DeviceDelegationRow:
    """May this device use ``power`` on ``handle``'s cameo now? Raises Denied with the reasons."""
    row, owner, delegation, _ = live_device(session, device_id)
    if owner.handle != handle:
        raise DeniedError(f"this device acts for {owner.handle}, not {handle[:32]}")
    decision = device_decision(delegation, power=power, claimed=row.claimed_at is not None,
                               revoked=row.revoked_at is not None, now=now)
    if isinstance(decision, Denied):
        raise DeniedError(decision.reasons)
    stamp = fmt_time(now)
    if row.last_used_at is None or row.last_used_at[:16] != stamp[:16]:  # at most one write a minute
        row.last_used_at = stamp
    return row


def devices_of(session: Session, owner: Account, *, now: datetime) -> list[dict[str, Any]]:
    """The owner's delegations, newest first: each device, its powers, its state."""
    rows = session.execute(select(DeviceDelegationRow).where(DeviceDelegationRow.owner_id == owner.id)
                           .order_by(DeviceDelegationRow.created_at.desc(), DeviceDelegationRow.id)).scalars()
    out = []
    for row in rows:
        try:
            _, doc = _verified(session, row)
            powers, ok = list(doc.powers), True
        except Exception:  # noqa: BLE001 - an altered row is shown as such, never trusted
            powers, ok = [], False
        if not ok:
            state = "tampered"
        elif row.revoked_at:
            state = "signed out"
        elif row.claimed_at is None:
            state = "link expired" if row.claim_by <= fmt_time(now) else "link not yet used"
        elif row.not_after <= fmt_time(now):
            state = "expired"
        else:
            state = "active"
        out.append({"delegation_id": row.id, "device_id": row.device_id, "label": row.label, "powers": powers,
                    "created": row.created_at, "claim_by": row.claim_by, "claimed": row.claimed_at,
                    "not_after": row.not_after, "last_used": row.last_used_at, "revoked_at": row.revoked_at,
                    "revoked_by": row.revoked_by, "state": state})
    return out


def sign_out(session: Session, owner: Account, ident: str, *, by: str, now: datetime) -> dict[str, Any]:
    """End one of the owner's delegations (by delegation id or device id): its device is signed
    out at once, in every worker (each request re-reads the row), and an unused link dies with it."""
    q = select(DeviceDelegationRow).where(DeviceDelegationRow.owner_id == owner.id,
                                          (DeviceDelegationRow.id == ident[:64]) |
                                          (DeviceDelegationRow.device_id == ident[:40]))
    row = session.execute(q.with_for_update()).scalar_one_or_none()
    if row is None:
        raise UnknownDevice(f"{owner.handle} has no device or sign-in link {ident[:64]!r}")
    _verified(session, row)
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = fmt_time(now), by[:80]
        _seal(session, row)
        session.flush()
    return {"delegation_id": row.id, "device_id": row.device_id, "revoked_at": row.revoked_at,
            "revoked_by": row.revoked_by}


def device_revocation(session: Session, data: bytes, *, device_id: str, now: datetime) -> dict[str, Any]:
    """Apply a device-signed revocation (one grant) or withdrawal (all consent): verified under
    the device key of a live delegation giving that power, then applied as the owner's own
    revocation is (same grant state, same cameo status, same audit events, naming the device)."""
    from . import _audit as audit
    from . import _services as reg
    from ._events import EventTag
    from ._models import Cameo, GrantRow, RevocationRow
    from ._trust import trust_of

    row, owner, delegation, key = live_device(session, device_id)
    try:
        rev = DeviceRevocation.from_bytes(data, key)
    except MalformedDocument as e:
        raise BadInput(f"malformed revocation: {e}") from e
    if rev.device_id != row.device_id or rev.delegation != row.id or rev.owner != owner.handle:
        raise KeyMismatch("the revocation names another device, delegation or owner")
    authorize(session, device_id, handle=owner.handle, power=rev.power, now=now)
    if abs(now - rev.created) > FRESHNESS:
        raise BadInput("the revocation is not fresh (older than 5 minutes or from the future: check the clock)")
    if session.get(RevocationRow, rev.id) is not None:
        raise DuplicateHandle("a revocation with this id was already applied")
    stamp = fmt_time(now)
    if rev.scope == "grant":
        g = session.get(GrantRow, rev.target)
        if g is None or g.owner_id != owner.id:
            raise UnknownGrant(f"{owner.handle} has no grant {rev.target[:64]!r}")
        revoked = reg.revoke_grants(session, owner, grant_id=g.id, stamp=stamp)
        event = EventTag.CONSENT_GRANT_REVOKE
    else:
        revoked = reg.revoke_grants(session, owner, grant_id=None, stamp=stamp)
        cameo = session.execute(select(Cameo).where(Cameo.account_id == owner.id)).scalar_one_or_none()
        if cameo is not None and cameo.status == "active":
            cameo.status = "withdrawn"
            cameo.state_mac = trust_of(session).cameo_mac(cameo.id, owner.id, "withdrawn", cameo.consent_digest)
            reg.bump_likeness_version(session)
        event = EventTag.CONSENT_WITHDRAW
    session.add(RevocationRow(id=rev.id, owner_id=owner.id, scope=rev.scope, target=rev.target, envelope=data,
                              created_at=stamp))
    audit.append(session, event, now=now, actor=owner.id, subject=owner.id,
                 detail={"revocation": rev.id, "digest": rev.digest, "scope": rev.scope, "revoked": revoked,
                         "device": row.device_id, "delegation": row.id})
    session.flush()
    return {"revocation_id": rev.id, "scope": rev.scope, "revoked_grants": revoked, "device_id": row.device_id}
