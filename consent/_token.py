"""Permission tokens: PASETO v4.public (Ed25519), registry-signed, short-lived, single-use.

Why PASETO v4.public: one fixed algorithm per version (no ``alg`` header to confuse), a footer for
the key id hint, and an *implicit assertion* that we set to the token's type tag, so a token only
verifies as a cameo permission token. Claims::

    iss  registry id            jti  unique token id        sub  owner handle (the cameo)
    aud  generator id           gnt  grant id               gte  grantee handle
    req  request digest         pur  purpose                mod  modalities
    iat / nbf / exp  RFC 3339 UTC times

Time is an argument: nothing here reads the clock.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyseto

from ._documents import DIGEST_RE, GENERATOR_RE, HANDLE_RE, MODALITIES, PURPOSES, fmt_time, parse_time
from ._errors import (
    AudienceMismatch,
    MalformedDocument,
    RequestMismatch,
    SignatureInvalid,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    VerificationError,
    WrongDocumentType,
)
from ._keys import SigningKey, VerifyKey
from ._reason import Allowed, Decision, Denied, Reason

TOKEN_TYPE = b"application/vnd.cameo.permission-token.v1"
DEFAULT_SKEW = timedelta(seconds=30)
MAX_TOKEN_LEN = 4096
_CLAIMS = {"iss", "jti", "sub", "aud", "gnt", "gte", "req", "pur", "mod", "iat", "nbf", "exp"}


class TokenKeyring:
    """Keys for tokens, typed by purpose: the active key signs; retired keys only verify, and only
    tokens issued before they retired (``retired_at``, per key id)."""

    def __init__(self, active: SigningKey | None, retired: list[VerifyKey] | None = None, *,
                 retired_at: dict[str, datetime] | None = None) -> None:
        self._active = active
        self._verify: dict[str, VerifyKey] = {k.key_id: k for k in (retired or [])}
        self._retired_at: dict[str, datetime] = dict(retired_at or {})
        # footer text -> (kid, key, PAE tail) for the canonical footer of each key on file; bounded
        # by the number of keys, since only the one canonical spelling per key is ever stored
        self._footers: dict[str, tuple[str, VerifyKey, bytes]] = {}
        if active is not None:
            self._verify[active.key_id] = active.public
            self._signer = pyseto.Key.new(4, "public", active.to_pem(None))

    @classmethod
    def verify_only(cls, keys: list[VerifyKey]) -> TokenKeyring:
        return cls(None, keys)

    def _footer(self, part: str) -> tuple[str, VerifyKey, bytes]:
        """The key id, key and PAE tail named by a token's footer part (base64url text)."""
        hit = self._footers.get(part)
        if hit is not None:
            return hit
        if not _canonical_b64url(part):
            raise MalformedDocument("the token is not in canonical base64url")
        raw = _b64url(part)
        try:
            footer = orjson.loads(raw)
            kid = footer["kid"]
            if not isinstance(kid, str) or set(footer) != {"kid"}:
                raise ValueError
        except (ValueError, KeyError, TypeError) as e:
            raise MalformedDocument("the token footer is malformed") from e
        # 2. signature: under a token key the registry has on file (the kid is a hint to find it)
        key = self._verify.get(kid)
        if key is None:
            raise SignatureInvalid("the token is not signed by a key this registry knows")
        entry = (kid, key, _le64(len(raw)) + raw + _PAE_TAIL)
        if raw == _canonical_footer(kid):
            self._footers[part] = entry
        return entry

    def sign(self, payload: bytes, footer: bytes) -> str:
        if self._active is None:
            raise TokenInvalid("this keyring has no active signing key")
        return pyseto.encode(self._signer, payload, footer=footer, implicit_assertion=TOKEN_TYPE).decode()

    @property
    def active_kid(self) -> str:
        if self._active is None:
            raise TokenInvalid("this keyring has no active signing key")
        return self._active.key_id

    def __repr__(self) -> str:
        return f"TokenKeyring(verify={sorted(self._verify)})"


@dataclass(frozen=True)
class PermissionToken:
    jti: str
    issuer: str
    owner: str
    audience: str
    grant_id: str
    grantee: str
    request_digest: str
    purpose: str
    modalities: tuple[str, ...]
    issued_at: datetime
    not_before: datetime
    expires: datetime
    kid: str

    def claims(self) -> dict[str, Any]:
        return {"aud": self.audience, "exp": fmt_time(self.expires), "gnt": self.grant_id, "gte": self.grantee,
                "iat": fmt_time(self.issued_at), "iss": self.issuer, "jti": self.jti, "mod": list(self.modalities),
                "nbf": fmt_time(self.not_before), "pur": self.purpose, "req": self.request_digest, "sub": self.owner}

    def check(self, *, audience: str, request_digest: str, now: datetime,
              skew: timedelta = DEFAULT_SKEW) -> Decision:
        """Steps after the signature: audience, validity window at ``now``, request binding.
        Returns every reason that fails, not just the first."""
        reasons = []
        if audience != self.audience:
            reasons.append(Reason("token.audience", "the token is for another generator"))
        if now > self.expires + skew:
            reasons.append(Reason("token.expired", "the token has expired"))
        if now + skew < self.not_before:
            reasons.append(Reason("token.not_yet_valid", "the token is not valid yet"))
        if request_digest != self.request_digest:
            reasons.append(Reason("token.request", "the token was issued for a different request"))
        return Denied(tuple(reasons)) if reasons else Allowed()

    def enforce(self, *, audience: str, request_digest: str, now: datetime,
                skew: timedelta = DEFAULT_SKEW) -> None:
        """Like :meth:`check` but raises the typed error of the first failure."""
        d = self.check(audience=audience, request_digest=request_digest, now=now, skew=skew)
        if isinstance(d, Denied):
            code = d.reasons[0].code
            cls: type[TokenInvalid] = {"token.audience": AudienceMismatch, "token.expired": TokenExpired,
                                       "token.not_yet_valid": TokenNotYetValid,
                                       "token.request": RequestMismatch}.get(code, TokenInvalid)
            raise cls(d.reasons[0].message)


def mint_token(keyring: TokenKeyring, *, issuer: str, jti: str, owner: str, audience: str, grant_id: str,
               grantee: str, request_digest: str, purpose: str, modalities: tuple[str, ...], now: datetime,
               ttl: timedelta) -> tuple[str, PermissionToken]:
    if ttl <= timedelta(0) or ttl > timedelta(hours=24):
        raise TokenInvalid("token lifetime must be between 1 second and 24 hours")
    tok = PermissionToken(jti=jti, issuer=issuer, owner=owner, audience=audience, grant_id=grant_id,
                          grantee=grantee, request_digest=request_digest, purpose=purpose, modalities=modalities,
                          issued_at=now, not_before=now, expires=now + ttl, kid=keyring.active_kid)
    payload = json.dumps(tok.claims(), sort_keys=True, separators=(",", ":")).encode()
    footer = _canonical_footer(keyring.active_kid)
    return keyring.sign(payload, footer), tok


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _canonical_b64url(part: str) -> bool:
    """Unpadded base64url whose last character has its unused low bits at zero (only the last
    character of an unpadded quantum carries unused bits)."""
    r = len(part) % 4
    if r == 1:
        return False
    if r == 0 or not part:
        return True
    v = _B64URL.find(part[-1])
    return v >= 0 and not v & (0xF if r == 2 else 0x3)


_HEADER = b"v4.public."
_SIG = 64


def _le64(n: int) -> bytes:
    return (n & 0x7FFFFFFFFFFFFFFF).to_bytes(8, "little")


# PAE(h, m, f, i) = LE64(4) || LE64(len h) || h || LE64(len m) || m || LE64(len f) || f || LE64(len i) || i
_PAE_HEAD = _le64(4) + _le64(len(_HEADER)) + _HEADER
_PAE_TAIL = _le64(len(TOKEN_TYPE)) + TOKEN_TYPE
_URL_TO_STD = str.maketrans("-_", "+/")


def _b64url(part: str) -> bytes:
    """Decode unpadded base64url (the caller has checked it is canonical)."""
    try:
        return binascii.a2b_base64(part.translate(_URL_TO_STD) + "=" * (-len(part) % 4), strict_mode=True)
    except (ValueError, binascii.Error) as e:
        raise MalformedDocument("the token is not base64url") from e


def _canonical_footer(kid: str) -> bytes:
    return orjson.dumps({"kid": kid})


def _verify_body(body: str, key: VerifyKey, pae_tail: bytes) -> bytes:
    """PASETO v4.public verification (spec: paseto-spec, docs/01-Protocol-Versions/Version4.md,
    "Verify"): split m||sig, then Ed25519 over PAE(h, m, f, i) with i = the token type tag;
    ``pae_tail`` is LE64(len f) || f || LE64(len i) || i for the token's footer f.

    The same computation as pyseto's ``V4Public.verify`` (which mints our tokens and against which
    the tests cross-check), without its per-call object layers: this runs on every gate decision."""
    if not _canonical_b64url(body):
        raise MalformedDocument("the token is not in canonical base64url")
    raw = _b64url(body)
    if len(raw) <= _SIG:
        raise MalformedDocument("the token is too short to carry a signature")
    m = raw[:-_SIG]
    key.verify(raw[-_SIG:], b"".join((_PAE_HEAD, _le64(len(m)), m, pae_tail)))  # raises SignatureInvalid
    return m


def parse_token(token: str, keyring: TokenKeyring) -> PermissionToken:
    """Steps 1-3 of token verification: parse, signature under a registry key, type and claims shape.

    Runs on every gate decision, so it is written for as little work as the checks allow: the
    footer of each registry key is decoded once (``TokenKeyring._footer``) and the claims are read
    with one orjson call."""
    # 1. parse: a bounded ASCII string with the v4.public prefix and a footer naming a key id
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN or not token.isascii():
        raise MalformedDocument("not a permission token")
    if not token.startswith("v4.public."):
        raise WrongDocumentType("not a PASETO v4.public permission token")
    parts = token.split(".")
    if len(parts) != 4:
        raise MalformedDocument("a permission token has a footer with its key id")
    # base64url without padding leaves unused low bits in the last character: only the canonical
    # spelling of each part is accepted, so that every character of a token matters
    kid, key, pae_tail = keyring._footer(parts[3])  # 2. the key on file that the kid names
    # 3. type: the implicit assertion binds the type tag, so no other signed thing verifies here
    payload = _verify_body(parts[2], key, pae_tail)
    try:
        c = orjson.loads(payload)
    except ValueError as e:
        raise MalformedDocument("token claims are not JSON") from e
    if not isinstance(c, dict) or c.keys() != _CLAIMS:
        raise MalformedDocument("token claims are not the expected set")
    try:
        mods = c["mod"]
        if (not isinstance(mods, list) or not mods or any(m not in MODALITIES for m in mods)
                or c["pur"] not in PURPOSES or not GENERATOR_RE.fullmatch(c["aud"])
                or not HANDLE_RE.fullmatch(c["sub"]) or not HANDLE_RE.fullmatch(c["gte"])
                or not DIGEST_RE.fullmatch(c["req"])
                or not all(isinstance(c[k], str) and c[k] for k in ("iss", "jti", "gnt"))):
            raise ValueError
    except (TypeError, ValueError) as e:
        raise MalformedDocument("token claims hold invalid values") from e
    issued = parse_time(c["iat"], "iat")
    cut = keyring._retired_at.get(kid)
    if cut is not None and issued >= cut:  # a retired key verifies only what it signed before retiring
        raise SignatureInvalid("the token is signed by a retired key after it was retired")
    return PermissionToken(jti=c["jti"], issuer=c["iss"], owner=c["sub"], audience=c["aud"], grant_id=c["gnt"],
                           grantee=c["gte"], request_digest=c["req"], purpose=c["pur"], modalities=tuple(mods),
                           issued_at=issued, not_before=parse_time(c["nbf"], "nbf"),
                           expires=parse_time(c["exp"], "exp"), kid=kid)


def verify_token(token: str, keyring: TokenKeyring, *, audience: str, request_digest: str, now: datetime,
                 skew: timedelta = DEFAULT_SKEW) -> PermissionToken:
    """Parse, verify and check a token in one go; raises the typed error of the first failure."""
    tok = parse_token(token, keyring)
    tok.enforce(audience=audience, request_digest=request_digest, now=now, skew=skew)
    return tok


__all__ = ["PermissionToken", "TokenKeyring", "mint_token", "parse_token", "verify_token", "VerificationError"]
