"""Canonical bytes and the pre-authentication encoding every signature covers.

Stored documents are RFC 8785 (JSON Canonicalization Scheme) JSON. A signature covers
``PAE(payload_type, canonical_body)`` as in DSSE v1:

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

so a signature made for one document type never verifies as another.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import rfc8785

from ._errors import MalformedDocument


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of ``obj``."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise MalformedDocument(f"cannot canonicalise: {type(e).__name__}") from e


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    """A content digest in the ``sha256:<hex>`` form used throughout the documents."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedDocument(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as e:
        raise MalformedDocument(f"{what} is not valid base64") from e
    # base64 leaves the low bits of the last character unused: without this check, several
    # spellings decode to the same bytes, and a changed byte of a stored document would go unnoticed
    if base64.b64encode(raw).decode() != text:
        raise MalformedDocument(f"{what} is not in canonical base64")
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def strict_json_loads(data: bytes | str, what: str) -> Any:
    """Parse JSON, refusing duplicate keys and NaN/Infinity (which a canonical form cannot carry)."""
    try:
        return json.loads(data, object_pairs_hook=_unique_pairs, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MalformedDocument(f"{what} is not valid JSON") from e
