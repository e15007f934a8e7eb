"""Signed envelopes for stored documents (DSSE layout, canonical JSON body, Ed25519).

Envelope bytes are themselves canonical JSON::

    {"payload": b64(body), "payloadType": "...", "signatures": [{"keyid": "...", "sig": b64}]}

The body must be the canonical form of itself: a re-encoded but equivalent body is rejected,
so every byte of a stored document is covered by its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._canonical import b64d, b64e, canonical_json, digest, pae, strict_json_loads
from ._errors import KeyMismatch, MalformedDocument, SignatureInvalid, WrongDocumentType
from ._keys import SigningKey, VerifyKey


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    body: bytes
    keyid: str
    sig: bytes

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "payload": b64e(self.body),
                "payloadType": self.payload_type,
                "signatures": [{"keyid": self.keyid, "sig": b64e(self.sig)}],
            }
        )

    @property
    def digest(self) -> str:
        """Digest of the signed body (the document's content id)."""
        return digest(self.body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedDocument("an envelope is bytes")
        obj = strict_json_loads(bytes(data), "envelope")
        if not isinstance(obj, dict) or set(obj) != {"payload", "payloadType", "signatures"}:
            raise MalformedDocument("envelope must have exactly payload, payloadType, signatures")
        if canonical_json(obj) != bytes(data):
            raise MalformedDocument("envelope is not in canonical form")
        ptype = obj["payloadType"]
        if not isinstance(ptype, str) or not ptype:
            raise MalformedDocument("payloadType must be a non-empty string")
        sigs = obj["signatures"]
        if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
            raise MalformedDocument("envelope must carry exactly one signature")
        if set(sigs[0]) != {"keyid", "sig"} or not isinstance(sigs[0]["keyid"], str):
            raise MalformedDocument("a signature has exactly keyid and sig")
        body = b64d(obj["payload"], "payload")
        sig = b64d(sigs[0]["sig"], "signature")
        return cls(ptype, body, sigs[0]["keyid"], sig)


def seal(payload_type: str, payload: dict[str, Any], key: SigningKey) -> bytes:
    """Sign ``payload`` under ``payload_type`` and return the envelope bytes."""
    body = canonical_json(payload)
    return Envelope(payload_type, body, key.key_id, key.sign(pae(payload_type, body))).to_bytes()


def open_envelope(data: bytes, payload_type: str, key_on_file: VerifyKey) -> tuple[dict[str, Any], Envelope]:
    """Parse, check the type tag and verify against the key on file. Returns (payload, envelope).

    The key id in the envelope is only a hint: the signature must verify under ``key_on_file``.
    """
    env = Envelope.from_bytes(data)
    if env.payload_type != payload_type:
        raise WrongDocumentType(f"expected a {payload_type} document, got {env.payload_type}")
    try:
        key_on_file.verify(env.sig, pae(env.payload_type, env.body))
    except SignatureInvalid:
        if env.keyid != key_on_file.key_id:
            raise KeyMismatch("signed by a key other than the one on file") from None
        raise
    # the key id is outside the signature (a hint); it must still name the key on file, so that
    # every byte of a stored document matters
    if env.keyid != key_on_file.key_id:
        raise KeyMismatch("the envelope's key id does not name the signer's key on file")
    payload = strict_json_loads(env.body, "payload")
    if not isinstance(payload, dict):
        raise MalformedDocument("payload must be a JSON object")
    if canonical_json(payload) != env.body:
        raise MalformedDocument("payload is not in canonical form")
    return payload, env


def peek(data: bytes, payload_type: str) -> dict[str, Any]:
    """Parse an envelope's payload WITHOUT verifying it: only to find which key to verify with."""
    env = Envelope.from_bytes(data)
    if env.payload_type != payload_type:
        raise WrongDocumentType(f"expected a {payload_type} document, got {env.payload_type}")
    payload = strict_json_loads(env.body, "payload")
    if not isinstance(payload, dict):
        raise MalformedDocument("payload must be a JSON object")
    return payload
