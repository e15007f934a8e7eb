"""Device delegation: an owner's own key lets one browser (a *device*) act on her page, and only to
narrow consent. Three signed documents make the chain, each under its own type tag:

1. :class:`DeviceDelegation`, signed by the **owner's key** on her machine (``cameo web``): which
   powers (a subset of :data:`POWERS`: read, revoke, withdraw, delete, devices; never a grant,
   never new consent), until when (``not_after``), and the public half of a one-time **ticket
   key** that may claim the delegation until ``claim_by`` (minutes). The owner cannot name the
   device key here: it does not exist yet, and it must be made by the browser itself.
2. :class:`DeviceClaim`, signed by the **ticket key**: the device's own public key (an Ed25519 key
   the browser made with WebCrypto, non-extractable) and its id, bound to the delegation's digest.
   The ticket key's seed travels only in the sign-in link's URL fragment, which browsers never
   send; the registry sees its public half (in the delegation) and the claim, never the seed.
   A delegation is claimed once: the registry burns the ticket, so a reused link is refused.
3. :class:`DeviceRevocation`, signed by the **device key**: the page's act of revoking one grant
   (scope ``grant``) or withdrawing consent (scope ``consent``), verified by the registry against
   the device key of a live delegation that gives that power, and stored like the owner's own.

So every device act verifies back to the owner's key: owner -> ticket key -> device key -> act,
and the registry holds no key that can sign any link of it. Reads, deletion and signing devices
out are RFC 9421 requests signed by the device key (``keyid="device:<id>"``), checked against the
same chain on every request (:func:`device_decision`).

Pure: the clock and the keys are arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from ._documents import HANDLE_RE, _choices, _Document, _keys, _str, fmt_time, parse_time
from ._envelope import Envelope
from ._errors import MalformedDocument
from ._keys import VerifyKey
from ._reason import Allowed, Decision, Denied, Reason

#: What a delegated device may do: each only narrows consent.
POWERS = ("read", "revoke", "withdraw", "delete", "devices")
#: What no device may ever do (they widen consent): named so a refusal can say so.
WIDENING = ("grant", "consent", "enroll", "token", "follow")
MAX_TICKET = timedelta(hours=1)
MAX_DELEGATION = timedelta(days=400)
#: How far a claim's or a device revocation's ``created`` may be from the registry's clock.
FRESHNESS = timedelta(minutes=5)

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def device_id_for(device_key: VerifyKey) -> str:
    """A device's id: a fingerprint of its public key (``dev-`` + 24 hex of its SHA-256)."""
    return "dev-" + hashlib.sha256(device_key.raw).hexdigest()[:24]


def _key(d: dict[str, Any], k: str) -> VerifyKey:
    try:
        return VerifyKey.from_b64(_str(d, k, max_len=64))
    except MalformedDocument as e:
        raise MalformedDocument(f"{k} is not a raw Ed25519 public key in base64") from e


@dataclass(frozen=True)
class DeviceDelegation(_Document):
    """Owner-signed: the powers a device may have on her page, until when, and the one-time
    ticket key that may bind a device key to them (until ``claim_by``)."""

    TYPE: ClassVar[str] = "application/vnd.cameo.device-delegation.v1+json"
    id: str = ""
    owner: str = ""
    owner_key: str = ""
    ticket_key: str = ""
    powers: tuple[str, ...] = ()
    created: datetime = _EPOCH
    claim_by: datetime = _EPOCH
    not_after: datetime = _EPOCH

    @property
    def ticket_verify_key(self) -> VerifyKey:
        return VerifyKey.from_b64(self.ticket_key)

    def _payload(self) -> dict[str, Any]:
        return {"claim_by": fmt_time(self.claim_by), "created": fmt_time(self.created), "id": self.id,
                "not_after": fmt_time(self.not_after), "owner": self.owner, "owner_key": self.owner_key,
                "powers": list(self.powers), "ticket_key": self.ticket_key}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> DeviceDelegation:
        _keys(p, {"claim_by", "created", "id", "not_after", "owner", "owner_key", "powers", "ticket_key"},
              "device delegation")
        if isinstance(p["powers"], list):
            widening = [x for x in p["powers"] if x in WIDENING]
            if widening:
                raise MalformedDocument(f"a device may only narrow consent: {', '.join(widening)} cannot be delegated")
        powers = _choices(p, "powers", POWERS)
        if "read" not in powers:
            raise MalformedDocument("a device delegation includes read (the page shows what it acts on)")
        created, claim_by = parse_time(p["created"], "created"), parse_time(p["claim_by"], "claim_by")
        not_after = parse_time(p["not_after"], "not_after")
        if not created < claim_by <= created + MAX_TICKET:
            raise MalformedDocument("claim_by must be after created, by at most an hour (the link is one-time and short-lived)")
        if not claim_by < not_after <= created + MAX_DELEGATION:
            raise MalformedDocument(f"not_after must be after claim_by and within {MAX_DELEGATION.days} days of created")
        _key(p, "ticket_key")
        return cls(envelope=env, id=_str(p, "id", max_len=64), owner=_str(p, "owner", HANDLE_RE),
                   owner_key=_str(p, "owner_key"), ticket_key=p["ticket_key"], powers=powers, created=created,
                   claim_by=claim_by, not_after=not_after)


@dataclass(frozen=True)
class DeviceClaim(_Document):
    """Ticket-key-signed: this device key takes up that delegation (once)."""

    TYPE: ClassVar[str] = "application/vnd.cameo.device-claim.v1+json"
    delegation: str = ""
    delegation_digest: str = ""
    owner: str = ""
    device_id: str = ""
    device_key: str = ""
    created: datetime = _EPOCH

    @classmethod
    def _signer_field(cls) -> str:
        return "delegation"

    @property
    def device_verify_key(self) -> VerifyKey:
        return VerifyKey.from_b64(self.device_key)

    def _payload(self) -> dict[str, Any]:
        return {"created": fmt_time(self.created), "delegation": self.delegation,
                "delegation_digest": self.delegation_digest, "device_id": self.device_id,
                "device_key": self.device_key, "owner": self.owner}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> DeviceClaim:
        from ._documents import DIGEST_RE

        _keys(p, {"created", "delegation", "delegation_digest", "device_id", "device_key", "owner"}, "device claim")
        key = _key(p, "device_key")
        if _str(p, "device_id", max_len=64) != device_id_for(key):
            raise MalformedDocument("device_id is not the fingerprint of device_key")
        return cls(envelope=env, delegation=_str(p, "delegation", max_len=64),
                   delegation_digest=_str(p, "delegation_digest", DIGEST_RE), owner=_str(p, "owner", HANDLE_RE),
                   device_id=p["device_id"], device_key=p["device_key"], created=parse_time(p["created"], "created"))


@dataclass(frozen=True)
class DeviceRevocation(_Document):
    """Device-signed: revoke one of the owner's grants (scope ``grant``) or withdraw her consent
    entirely (scope ``consent``, target ``*``), under delegation ``delegation``."""

    TYPE: ClassVar[str] = "application/vnd.cameo.device-revocation.v1+json"
    id: str = ""
    owner: str = ""
    delegation: str = ""
    device_id: str = ""
    scope: str = "grant"
    target: str = ""
    created: datetime = _EPOCH

    @classmethod
    def _signer_field(cls) -> str:
        return "device_id"

    @property
    def power(self) -> str:
        """The delegated power this act needs."""
        return "revoke" if self.scope == "grant" else "withdraw"

    def _payload(self) -> dict[str, Any]:
        return {"created": fmt_time(self.created), "delegation": self.delegation, "device_id": self.device_id,
                "id": self.id, "owner": self.owner, "scope": self.scope, "target": self.target}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> DeviceRevocation:
        _keys(p, {"created", "delegation", "device_id", "id", "owner", "scope", "target"}, "device revocation")
        scope = _str(p, "scope")
        if scope not in ("grant", "consent"):
            raise MalformedDocument("scope must be grant or consent")
        target = _str(p, "target", max_len=64)
        if scope == "consent" and target != "*":
            raise MalformedDocument("a withdrawal's target is *")
        return cls(envelope=env, id=_str(p, "id", max_len=40), owner=_str(p, "owner", HANDLE_RE),
                   delegation=_str(p, "delegation", max_len=64), device_id=_str(p, "device_id", max_len=64),
                   scope=scope, target=target, created=parse_time(p["created"], "created"))


# -- the rules --------------------------------------------------------------------------------------
def claim_decision(delegation: DeviceDelegation, claim: DeviceClaim, *, claimed: bool, now: datetime) -> Decision:
    """Whether ``claim`` (already verified under the delegation's ticket key) may take up
    ``delegation`` now: the ticket is unused and unexpired, and the claim names this delegation."""
    reasons = []
    if claimed:
        reasons.append(Reason("ticket.used", "this sign-in link was already used: a link signs in one browser, once"))
    if now >= delegation.claim_by:
        reasons.append(Reason("ticket.expired", f"this sign-in link expired at {fmt_time(delegation.claim_by)}"))
    if claim.delegation != delegation.id or claim.delegation_digest != delegation.digest or \
            claim.owner != delegation.owner:
        reasons.append(Reason("claim.mismatch", "the claim names another delegation"))
    if abs(now - claim.created) > FRESHNESS:
        reasons.append(Reason("claim.stale", "the claim is not fresh (check the device's clock)"))
    return Denied(tuple(reasons)) if reasons else Allowed()


def device_decision(delegation: DeviceDelegation, *, power: str, claimed: bool, revoked: bool,
                    now: datetime) -> Decision:
    """Whether a device under ``delegation`` may use ``power`` now. Widening powers never."""
    reasons = []
    if power in WIDENING or power not in POWERS:
        reasons.append(Reason("device.widen", f"a device key may only narrow consent ({', '.join(POWERS)}); "
                                              f"{power} needs the owner's own key"))
    elif power not in delegation.powers:
        reasons.append(Reason("device.power", f"this device was not given the {power} power"))
    if not claimed:
        reasons.append(Reason("device.unclaimed", "no device has taken up this delegation"))
    if revoked:
        reasons.append(Reason("device.revoked", "this device was signed out"))
    if now >= delegation.not_after:
        reasons.append(Reason("device.expired", f"this device's delegation ended at {fmt_time(delegation.not_after)}"))
    return Denied(tuple(reasons)) if reasons else Allowed()
