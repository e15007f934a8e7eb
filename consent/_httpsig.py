"""HTTP Message Signatures (RFC 9421) with Ed25519, as cameo's parties sign their requests.

Every request a party makes to a registry server is signed by that party's own key: there is no
bearer secret to steal or replay. The profile (pure; the server checks the clock and the nonce):

* covered components, in this order: ``"@method" "@path" "@query" "content-digest"``;
* ``Content-Digest: sha-256=:<base64>:`` (RFC 9530) over the body as sent (empty body included);
* signature parameters ``created`` (seconds), ``nonce`` (16+ random bytes, base64url), ``keyid``
  (``account:<handle>`` or ``generator:<id>``), ``alg="ed25519"`` and ``tag="cameo"``;
* ``Signature-Input: sig1=(...)...`` and ``Signature: sig1=:<base64>:``.

The signature base is RFC 9421 section 2.5's: one ``"<component>": <value>`` line per component
and the ``"@signature-params"`` line last, without a trailing newline.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Mapping

from ._errors import MalformedDocument, SignatureInvalid
from ._keys import SigningKey, VerifyKey

COMPONENTS = ("@method", "@path", "@query", "content-digest")
TAG = "cameo"
LABEL = "sig1"
_KEYID_RE = re.compile(r"(account|generator|device):[a-z0-9][a-z0-9._-]{0,127}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")
_PARAM_RE = re.compile(r';([a-z]+)=("[^"\\]*"|[0-9]{1,15})')
_DIGEST_RE = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]{44}):")


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` field value of ``body`` (RFC 9530, sha-256)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _params(created: int, nonce: str, keyid: str) -> str:
    inner = " ".join(f'"{c}"' for c in COMPONENTS)
    return f'({inner});created={created};nonce="{nonce}";keyid="{keyid}";alg="ed25519";tag="{TAG}"'


def signature_base(method: str, path: str, query: str, digest: str, params: str) -> bytes:
    """RFC 9421 section 2.5 signature base for this profile's components."""
    values = (method.upper(), path or "/", "?" + query.lstrip("?"), digest)
    lines = [f'"{c}": {v}' for c, v in zip(COMPONENTS, values)]
    lines.append(f'"@signature-params": {params}')
    for line in lines:
        if "\n" in line or "\r" in line:
            raise MalformedDocument("a signed component holds a newline")
    return "\n".join(lines).encode()


def sign_request(key: SigningKey, *, keyid: str, method: str, path: str, query: str, body: bytes,
                 created: int, nonce: str | None = None) -> dict[str, str]:
    """The three headers that sign one request: Content-Digest, Signature-Input, Signature."""
    if not _KEYID_RE.fullmatch(keyid):
        raise MalformedDocument("keyid is account:<handle>, generator:<id> or device:<id>")
    nonce = nonce or secrets.token_urlsafe(18)
    digest = content_digest(body)
    params = _params(created, nonce, keyid)
    sig = key.sign(signature_base(method, path, query, digest, params))
    return {"Content-Digest": digest, "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{base64.b64encode(sig).decode()}:"}


@dataclass(frozen=True)
class SignedRequest:
    """What a request's signature says, once parsed (not yet verified against a key)."""

    keyid: str
    created: int
    nonce: str
    params: str
    signature: bytes
    covered: tuple[str, ...] = COMPONENTS
    expires: int | None = None

    @property
    def kind(self) -> str:
        return self.keyid.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.keyid.split(":", 1)[1]


_LABEL_RE = r"[a-z][a-z0-9_-]{0,31}"
_ENTRY_RE = re.compile(rf'^({_LABEL_RE})=\(((?:"[a-z0-9@-]+" ?)*)\)((?:;[a-z]+=(?:"[^"\\]*"|[0-9]{{1,15}}))*)$')
_SIGV_RE = re.compile(rf"^({_LABEL_RE})=:([A-Za-z0-9+/=]{{1,200}}):$")
DERIVED = ("@method", "@path", "@query", "@authority")
REQUIRED = ("@method", "@path")


def parse_signature(headers: Mapping[str, str]) -> SignedRequest:
    """Parse the ``Signature-Input`` and ``Signature`` fields (one signature). Our own clients
    sign exactly :data:`COMPONENTS` with ``alg`` and ``tag``; any RFC 9421 client is accepted that
    covers at least ``@method`` and ``@path`` (``content-digest`` too when there is a body, and
    ``@query`` when there is a query), in any order, with other derived components (``@authority``) or header fields, and
    gives ``created``, ``nonce`` and ``keyid`` (``alg`` and ``tag`` optional, but only
    ``ed25519`` and ``cameo`` if given). Raises :class:`MalformedDocument` otherwise."""
    given = headers.get("signature-input")
    sig = headers.get("signature")
    if not given or not sig:
        raise MalformedDocument("the request is not signed (Signature-Input and Signature are required)")
    m = _ENTRY_RE.fullmatch(given.strip())
    if m is None:
        raise MalformedDocument("Signature-Input is not one signature entry (label=(components);params)")
    label = m.group(1)
    covered = tuple(c.strip('"') for c in m.group(2).split())
    if len(set(covered)) != len(covered):
        raise MalformedDocument("a component is covered twice")
    for c in covered:
        if c.startswith("@") and c not in DERIVED:
            raise MalformedDocument(f"derived component {c} is not supported (use {', '.join(DERIVED)})")
    missing = [c for c in REQUIRED if c not in covered]
    if missing:
        raise MalformedDocument(f"the signature must cover {' '.join(REQUIRED)} (missing {' '.join(missing)})")
    params: dict[str, str] = {}
    for k, v in _PARAM_RE.findall(m.group(3)):
        if k in params:
            raise MalformedDocument(f"signature parameter {k} given twice")
        params[k] = v.strip('"')
    if params.get("alg", "ed25519") != "ed25519" or params.get("tag", TAG) != TAG:
        raise MalformedDocument('alg, if given, is "ed25519"; tag, if given, is "cameo"')
    keyid, nonce, created = params.get("keyid", ""), params.get("nonce", ""), params.get("created", "")
    if not _KEYID_RE.fullmatch(keyid):
        raise MalformedDocument("keyid is account:<handle>, generator:<id> or device:<id>")
    if not _NONCE_RE.fullmatch(nonce):
        raise MalformedDocument("the signature needs a random nonce (16+ bytes, base64url)")
    if not created.isdigit():
        raise MalformedDocument("the signature needs created=<seconds>")
    expires = params.get("expires")
    if expires is not None and not expires.isdigit():
        raise MalformedDocument("expires is a number of seconds")
    s = _SIGV_RE.fullmatch(sig.strip())
    if s is None or s.group(1) != label:
        raise MalformedDocument(f"Signature is not one {label} byte sequence")
    try:
        raw = base64.b64decode(s.group(2), validate=True)
    except ValueError as e:
        raise MalformedDocument("Signature is not base64") from e
    return SignedRequest(keyid, int(created), nonce, m.group(0)[len(label) + 1:], raw, covered,
                         int(expires) if expires is not None else None)


def _base(signed: SignedRequest, *, method: str, path: str, query: str, headers: Mapping[str, str],
          digest: str) -> bytes:
    lines = []
    for c in signed.covered:
        if c == "@method":
            v = method.upper()
        elif c == "@path":
            v = path or "/"
        elif c == "@query":
            v = "?" + query.lstrip("?")
        elif c == "@authority":
            v = (headers.get("host") or "").lower()
        elif c == "content-digest":
            v = digest
        else:
            got = headers.get(c)
            if got is None:
                raise SignatureInvalid(f"the signature covers {c}, which the request does not have")
            v = got.strip()
        if "\n" in v or "\r" in v:
            raise MalformedDocument("a signed component holds a newline")
        lines.append(f'"{c}": {v}')
    lines.append(f'"@signature-params": {signed.params}')
    return "\n".join(lines).encode()


def verify_request(signed: SignedRequest, key: VerifyKey, *, method: str, path: str, query: str,
                   body: bytes, headers: Mapping[str, str]) -> None:
    """Check the body against ``Content-Digest`` and the signature against ``key``. The caller
    checks ``created`` (and ``expires``) against its clock and records the nonce (replays)."""
    got = headers.get("content-digest") or ""
    if body or "content-digest" in signed.covered:
        m = _DIGEST_RE.search(got)
        if "content-digest" not in signed.covered:
            raise SignatureInvalid("the request has a body the signature does not cover (content-digest)")
        if m is None or ("sha-256=:" + m.group(1) + ":") != content_digest(body):
            raise SignatureInvalid("the body does not match its Content-Digest (sha-256)")
    if query and "@query" not in signed.covered:
        raise SignatureInvalid("the request has a query the signature does not cover (@query)")
    key.verify(signed.signature, _base(signed, method=method, path=path, query=query, headers=headers,
                                       digest=got.strip()))
