"""What the service runs for a party: each call takes signed bytes (or a public key) and returns
the same JSON-able document as the local command does. No private key is loaded here: signing,
keystores and passphrases live only on the party's side (:mod:`cameo.client`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from consent import ConsentError, Grant, MalformedDocument, VerifyKey, fmt_time

from . import _services as reg
from .._errors import BadInput, UnknownGrant
from ._app import engine_for
from ._db import transaction
from ._home import Home, check_handle
from ._models import Account, GrantRow


def _bad(e: Exception) -> BadInput:
    return BadInput(f"malformed document: {e}")


def account_public(home: Home, handle: str) -> dict[str, Any]:
    """An account's public key, as the registry bound it (anyone may ask: keys are public)."""
    with transaction(engine_for(home)) as s:
        acc = reg.get_account(s, handle)
        key = reg.account_key(s, acc)
        return {"handle": acc.handle, "account_id": acc.id, "key_id": key.key_id, "public_key": key.b64(),
                "created": acc.created_at}


def account_create(home: Home, handle: str, public_key: bytes, *, now: datetime) -> dict[str, Any]:
    check_handle(handle)
    try:
        key = VerifyKey(public_key)
    except MalformedDocument as e:
        raise BadInput(str(e)) from e
    with transaction(engine_for(home)) as s:
        acc = reg.create_account(s, handle, key, now=now)
        return {"handle": handle, "account_id": acc.id, "key_id": key.key_id}


def follow(home: Home, data: bytes, *, now: datetime) -> dict[str, Any]:
    with transaction(engine_for(home)) as s:
        doc = reg.follow(s, data, now=now)
        return {"follower": doc.follower, "followee": doc.followee, "digest": doc.digest}


def grant(home: Home, data: bytes, *, now: datetime) -> dict[str, Any]:
    """Store an owner-signed grant (its signature is its proof: the owner's key on file)."""
    with transaction(engine_for(home)) as s:
        doc: Grant = reg.submit_grant(s, data, now=now)
        return {"grant_id": doc.id, "owner": doc.owner, "grantee": doc.grantee, "modalities": list(doc.modalities),
                "purposes": list(doc.purposes), "generators": list(doc.generators), "max_uses": doc.max_uses,
                "not_after": fmt_time(doc.not_after), "digest": doc.digest}


def revoke(home: Home, data: bytes, *, now: datetime) -> dict[str, Any]:
    """Store an owner-signed revocation; it wins over every decision that starts after it commits."""
    from consent import Revocation

    with transaction(engine_for(home)) as s:
        try:
            owner = reg.get_account(s, Revocation.peek_signer(data))
        except (ConsentError, ValueError) as e:
            raise _bad(e) from e
        try:
            doc = Revocation.from_bytes(data, reg.account_key(s, owner))
        except MalformedDocument as e:
            raise _bad(e) from e
        if doc.scope == "grant":
            row = s.get(GrantRow, doc.target)
            if row is None or row.owner_id != owner.id:
                raise UnknownGrant(f"{owner.handle} has no grant {doc.target[:64]!r}")
        return reg.submit_revocation(s, data, now=now)


def token(home: Home, data: bytes, *, ttl: timedelta, now: datetime) -> dict[str, Any]:
    """Mint a token for a grantee-signed token request (the request is its own proof)."""
    from .._errors import MintDenied

    with transaction(engine_for(home)) as s:
        minted = reg.mint(s, data, home.keyring(), now=now, ttl=ttl)
    if minted.denied is not None:
        raise MintDenied(minted.denied.reasons)
    assert minted.claims is not None
    return {"token": minted.token, "token_id": minted.claims.jti, "grant_id": minted.claims.grant_id,
            "generator": minted.claims.audience, "expires": fmt_time(minted.claims.expires),
            "request_digest": minted.claims.request_digest}


def handle_of_account(home: Home, account_id: str) -> str | None:
    with transaction(engine_for(home)) as s:
        return s.execute(select(Account.handle).where(Account.id == account_id)).scalar_one_or_none()
