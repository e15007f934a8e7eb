"""The registry's root of trust, kept outside the database.

A database-write attacker (who can insert, edit and delete rows but holds no key file) must not be
able to make the gate release anything the owner did not consent to. So nothing the gate relies on
is taken from a row on the row's word:

- **Token keys** come from the key files (``registry/token.key``, retired keys in
  ``registry/retired-token-keys.json``), never from the ``registry_keys`` table.
- **Account keys** are bound to their account by the registry's *binding key*
  (``registry/binding.key``, Ed25519): a signature over account id, handle, key id and public key,
  checked wherever an account key verifies anything. A key swapped on an account row verifies
  nothing. The same key signs each registered generator (its adapter, config and sealing key) and
  each protected-list entry (an operator act).
- **Mutable state** (a grant's use count and revocation, a cameo's status) carries an HMAC under a
  *state key* derived from the vault KEK; the audit chain is keyed by an *audit key* derived the
  same way. A row edited outside cameo no longer verifies: the gate denies (``state.tampered``) and
  the audit log gets an integrity alert.

What a database-write attacker can still do, and what catches it: delete rows (a grant, a cameo, a
token-use record: the first two only deny, the third lets an unexpired token be replayed while its
grant still has uses, each replay consuming one); and roll a whole row back to an older state it
copied earlier (a grant's row from before its revocation, with that row's old tag). A rollback is
not detectable from the database alone: the keyed audit log records every revocation and use,
and the transparency log (signed checkpoints held outside the database) is what exposes it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consent import (
    ConsentError,
    SignatureInvalid,
    SigningKey,
    TokenKeyring,
    VerifyKey,
    binding_message,
    parse_time,
    state_mac,
    state_mac_ok,
)

from .._errors import CameoError, NotInitialised, Reason


class IntegrityError(CameoError):
    """A row of the registry does not verify against the registry's keys: it was altered outside
    cameo. Always a denial (exit 3), never a release."""

    exit_code = 3

    def __init__(self, message: str, *, code: str = "state.tampered") -> None:
        super().__init__(message)
        self.reasons = (Reason(code, message),)


@dataclass(eq=False)
class RegistryTrust:
    """The keys that make the registry's rows trustworthy. Built from the home's key files
    (:meth:`cameo.registry._home.Home.trust`); the signing half of the binding key exists only where the
    registry's key files are (the registry host)."""

    binding_key: VerifyKey
    state_key: bytes = field(repr=False)
    audit_key: bytes = field(repr=False)
    binder: SigningKey | None = field(default=None, repr=False)
    _seen: dict[tuple[str, bytes, bytes], bool] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"RegistryTrust(binding={self.binding_key.key_id})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("the registry's keys cannot be pickled")

    # -- binding statements --------------------------------------------------------------------
    def sign_binding(self, kind: str, statement: dict[str, str]) -> bytes:
        if self.binder is None:
            raise NotInitialised("the registry's binding key is not on this host")
        return self.binder.sign(binding_message(kind, statement))

    def binding_ok(self, kind: str, statement: dict[str, str], signature: bytes | None) -> bool:
        if not signature:
            return False
        msg = binding_message(kind, statement)
        sig = bytes(signature)
        key = (kind, msg, sig)
        hit = self._seen.get(key)
        if hit is not None:
            return hit
        try:
            self.binding_key.verify(sig, msg)
            ok = True
        except SignatureInvalid:
            ok = False
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[key] = ok
        return ok

    # -- accounts ------------------------------------------------------------------------------
    @staticmethod
    def account_statement(account_id: str, handle: str, public_key: bytes) -> dict[str, str]:
        vk = VerifyKey(bytes(public_key))
        return {"account_id": account_id, "handle": handle, "key_id": vk.key_id, "public_key": vk.b64()}

    def bind_account(self, account_id: str, handle: str, public_key: bytes) -> bytes:
        return self.sign_binding("account", self.account_statement(account_id, handle, public_key))

    def account_key(self, account_id: str, handle: str, key_id: str, public_key: bytes,
                    binding: bytes | None) -> VerifyKey:
        """The account's key, if the registry bound it to this account; else IntegrityError."""
        try:
            statement = self.account_statement(account_id, handle, public_key)
        except (ValueError, TypeError, ConsentError):
            statement = None
        if (statement is None or statement["key_id"] != key_id
                or not self.binding_ok("account", statement, binding)):
            raise IntegrityError(f"the key on file for {handle!r} is not the one the registry bound to that "
                                 "account: the account row was altered", code="account.binding")
        return VerifyKey(bytes(public_key))

    # -- generators ----------------------------------------------------------------------------
    @staticmethod
    def generator_statement(gen_id: str, adapter: str, config: str, public_key: bytes | None) -> dict[str, str]:
        return {"adapter": adapter, "config": config, "id": gen_id,
                "public_key": base64.b64encode(bytes(public_key)).decode() if public_key else ""}

    def check_generator(self, gen_id: str, adapter: str, config: str, public_key: bytes | None,
                        binding: bytes | None) -> None:
        if not self.binding_ok("generator", self.generator_statement(gen_id, adapter, config, public_key), binding):
            raise IntegrityError(f"generator {gen_id!r} is not registered as its row says: the row was altered",
                                 code="generator.binding")

    # -- state MACs ----------------------------------------------------------------------------
    def grant_mac(self, grant_id: str, digest: str, owner_id: str, grantee_id: str, uses: int,
                  revoked_at: str | None) -> str:
        return state_mac(self.state_key, "grant", grant_id, digest, owner_id, grantee_id, str(uses), revoked_at)

    def grant_ok(self, tag: str | None, grant_id: str, digest: str, owner_id: str, grantee_id: str, uses: int,
                 revoked_at: str | None) -> bool:
        return state_mac_ok(self.state_key, tag, "grant", grant_id, digest, owner_id, grantee_id, str(uses),
                            revoked_at)

    def cameo_mac(self, cameo_id: str, account_id: str, status: str, consent_digest: str) -> str:
        return state_mac(self.state_key, "cameo", cameo_id, account_id, status, consent_digest)

    def cameo_ok(self, tag: str | None, cameo_id: str, account_id: str, status: str, consent_digest: str) -> bool:
        return state_mac_ok(self.state_key, tag, "cameo", cameo_id, account_id, status, consent_digest)


def trust_of(session: Any) -> RegistryTrust:
    """The trust the caller's transaction was opened with (:func:`cameo.registry._db.transaction`)."""
    t = session.info.get("trust") if hasattr(session, "info") else None
    if t is None:
        raise NotInitialised("this transaction was opened without the registry's keys (use the home's engine)")
    return t  # type: ignore[no-any-return,unused-ignore]


# -- token keys on file ----------------------------------------------------------------------------
def load_retired(path: Any) -> tuple[list[VerifyKey], dict[str, datetime]]:
    """A retired key list (``registry/retired-token-keys.json``, ``retired-log-keys.json``):
    ``[{"public_key": b64, "retired_at": RFC 3339}]``."""
    if not path.exists():
        return [], {}
    try:
        doc = json.loads(path.read_text())
        keys, cut = [], {}
        for item in doc:
            vk = VerifyKey.from_b64(item["public_key"])
            keys.append(vk)
            cut[vk.key_id] = parse_time(item["retired_at"], "retired_at")
    except (ValueError, KeyError, TypeError, ConsentError) as e:
        raise NotInitialised(f"the retired key list {path.name} is corrupt") from e
    return keys, cut


def keyring_from_files(active: SigningKey | None, retired_path: Any, *, sign: bool) -> TokenKeyring:
    keys, cut = load_retired(retired_path)
    if sign:
        return TokenKeyring(active, keys, retired_at=cut)
    assert active is not None
    return TokenKeyring(None, [active.public, *keys], retired_at=cut)
