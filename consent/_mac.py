"""Keyed integrity of the registry's own state, and the statements its binding key signs.

Pure: keys are passed in. Two kinds of evidence live here:

- **State MACs** (HMAC-SHA256): mutable columns the gate relies on (a grant's use count and
  revocation, a cameo's status) carry a tag under a key derived from the vault KEK, which is
  kept outside the database. Whoever can only write to the database cannot make a tag for an
  edited row, so an un-revoked grant, a refilled counter or a re-activated cameo is a denial.
- **Binding statements**: the registry's binding key (a file beside the token key, never in the
  database) signs which public key belongs to which account, which generator a registered id
  names, and each protected-list entry. A key swapped on an account row verifies nothing.

Fields are framed with their lengths (as the audit entries are), so no two field lists collide.
"""

from __future__ import annotations

import hashlib
import hmac

from ._canonical import canonical_json, pae

_STATE_TAG = b"cameo.state.v1 "
BINDING_TYPES = {
    "account": "application/vnd.cameo.account-binding.v1+json",
    "generator": "application/vnd.cameo.generator-binding.v1+json",
    "protected": "application/vnd.cameo.protected-entry.v1+json",
}


def frame(*fields: str | None) -> bytes:
    """``LEN SP field SP`` per field (a missing field is ``-1 ``): an unambiguous encoding."""
    return b"".join(b"-1 " if f is None else b"%d %s " % (len(b := f.encode()), b) for f in fields)


def state_mac(key: bytes, kind: str, *fields: str | None) -> str:
    """Hex HMAC-SHA256 of a row's authenticated state under the registry's state key."""
    return hmac.new(key, _STATE_TAG + frame(kind, *fields), hashlib.sha256).hexdigest()


def state_mac_ok(key: bytes, tag: str | None, kind: str, *fields: str | None) -> bool:
    """Constant-time check of a stored tag (a missing tag never verifies)."""
    if not isinstance(tag, str):
        return False
    return hmac.compare_digest(state_mac(key, kind, *fields), tag)


def binding_message(kind: str, statement: dict[str, str]) -> bytes:
    """The bytes the registry's binding key signs for one statement (DSSE PAE under a type tag of
    its own, so a binding never verifies as a grant, a token or another kind of binding)."""
    try:
        ptype = BINDING_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown binding kind {kind!r}") from None
    return pae(ptype, canonical_json(statement))
