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
_INPUT_RE = re.compile(r'^sig1=\(((?:"[a-z@-]+" ?)*)\)((?:;[a-z]+=(?:"[^"\\]*"|[0-9]{1,15}))*)$')
_PARAM_RE = re.compile(r';([a-z]+)=("[^"\\]*"|[0-9]{1,15})')
_SIG_RE = re.compile(r"^sig1=:([A-Za-z0-9+/=]{1,200}):$")
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

    @property
    def kind(self) -> str:
        return self.keyid.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.keyid.split(":", 1)[1]


def parse_signature(headers: Mapping[str, str]) -> SignedRequest:
    """Parse the ``Signature-Input`` and ``Signature`` fields of a request in this profile.
    Raises :class:`MalformedDocument` when either is missing or is not this profile's."""
    given = headers.get("signature-input")
    sig = headers.get("signature")
    if not given or not sig:
        raise MalformedDocument("the request is not signed (Signature-Input and Signature are required)")
    m = _INPUT_RE.fullmatch(given.strip())
    if m is None:
        raise MalformedDocument("Signature-Input is not a single sig1 entry of this profile")
    covered = tuple(c.strip('"') for c in m.group(1).split())
    if covered != COMPONENTS:
        raise MalformedDocument(f"the signature must cover {' '.join(COMPONENTS)}")
    params: dict[str, str] = {}
    for k, v in _PARAM_RE.findall(m.group(2)):
        if k in params:
            raise MalformedDocument(f"signature parameter {k} given twice")
        params[k] = v.strip('"')
    if params.get("alg") != "ed25519" or params.get("tag") != TAG:
        raise MalformedDocument('the signature must say alg="ed25519" and tag="cameo"')
    keyid, nonce, created = params.get("keyid", ""), params.get("nonce", ""), params.get("created", "")
    if not _KEYID_RE.fullmatch(keyid):
        raise MalformedDocument("keyid is account:<handle>, generator:<id> or device:<id>")
    if not _NONCE_RE.fullmatch(nonce):
        raise MalformedDocument("the signature needs a random nonce (16+ bytes, base64url)")
    if not created.isdigit():
        raise MalformedDocument("the signature needs created=<seconds>")
    s = _SIG_RE.fullmatch(sig.strip())
    if s is None:
        raise MalformedDocument("Signature is not a single sig1 byte sequence")
    try:
        raw = base64.b64decode(s.group(1), validate=True)
    except ValueError as e:
        raise MalformedDocument("Signature is not base64") from e
    return SignedRequest(keyid, int(created), nonce, m.group(0)[len(LABEL) + 1:], raw)


def verify_request(signed: SignedRequest, key: VerifyKey, *, method: str, path: str, query: str,
                   body: bytes, headers: Mapping[str, str]) -> None:
    """Check the body against ``Content-Digest`` and the signature against ``key``. The caller
    checks ``created`` against its clock and records the nonce (replays)."""
    got = headers.get("content-digest") or ""
    m = _DIGEST_RE.search(got)
    if m is None or ("sha-256=:" + m.group(1) + ":") != content_digest(body):
        raise SignatureInvalid("the body does not match its Content-Digest")
    key.verify(signed.signature, signature_base(method, path, query, content_digest(body), signed.params))
