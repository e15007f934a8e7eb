"""The detached provenance statement: a DSSE-signed JSON beside an output that C2PA cannot embed in."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .._errors import (
    ProvenanceError,
    SigningFailed,
)

from consent import pae

from ._authority import ProvenanceAuthority, _replace, _version
from ._report import ProvenanceReport, ValidationMessage, _assertions, _chain_ok, _common_name, _report_from_manifest, _rooted, _unreadable


DETACHED_PAYLOAD_TYPE = "application/vnd.cameo.provenance+json; version=1"


DETACHED_SUFFIX = ".provenance.json"


def detached_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`sign_output` puts the detached statement for a format c2pa cannot sign."""
    p = Path(path)
    return p.with_name(p.name + DETACHED_SUFFIX)


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding (consent's one PAE): the signature covers the type tag and the body."""
    return pae(payload_type, body)


def _sign_detached(
    p: Path, data: bytes, claim: dict[str, Any], agent: str | None, authority: ProvenanceAuthority,
    soft_binding: Mapping[str, str] | None = None,
) -> None:
    statement: dict[str, Any] = {
        "asset": {"name": p.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        "claim_generator_info": [{"name": "cameo", "version": _version()}],
        "assertions": _assertions(claim, agent, soft_binding),
    }
    body = rfc8785.dumps(statement)
    envelope = {
        "payloadType": DETACHED_PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [
            {
                "alg": authority.algorithm,
                "sig": base64.b64encode(authority._sign_bytes(_pae(DETACHED_PAYLOAD_TYPE, body))).decode(),
            }
        ],
        "x5chain": authority.chain_pem.decode("ascii"),
    }
    try:
        _replace(detached_path(p), json.dumps(envelope, indent=1).encode(), 0o644)
    except OSError as e:
        raise SigningFailed(f"cannot write the provenance statement for {p.name}: {e.strerror}") from e


def _inspect_detached(p: Path, anchors: bytes, now: dt.datetime | None) -> ProvenanceReport:
    when = now or dt.datetime.now(dt.UTC)
    failures: list[ValidationMessage] = []
    try:
        envelope = json.loads(detached_path(p).read_bytes())
        if envelope.get("payloadType") != DETACHED_PAYLOAD_TYPE:
            raise ValueError("unknown payload type")
        body = base64.b64decode(envelope["payload"], validate=True)
        sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        chain = x509.load_pem_x509_certificates(envelope["x5chain"].encode("ascii"))
        statement = json.loads(body)
        data = p.read_bytes()
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        return _unreadable(p, "detached", ProvenanceError(f"unreadable provenance statement: {e}"))

    signer = chain[0]
    public = signer.public_key()
    try:
        pae = _pae(DETACHED_PAYLOAD_TYPE, body)
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, pae)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(sig, pae, ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidSignature
    except InvalidSignature:
        failures.append(
            ValidationMessage("failure", "claimSignature.mismatch", "statement signature invalid")
        )
    asset = statement.get("asset") or {}
    if asset.get("sha256") != hashlib.sha256(data).hexdigest() or asset.get("size") != len(data):
        failures.append(ValidationMessage("failure", "assertion.dataHash.mismatch", "file hash differs"))
    for cert in chain:
        if not (cert.not_valid_before_utc <= when <= cert.not_valid_after_utc):
            failures.append(
                ValidationMessage("failure", "signingCredential.expired", "certificate outside its validity")
            )
    if not _chain_ok(chain):
        failures.append(ValidationMessage("failure", "signingCredential.invalid", "malformed chain"))
    trusted = not failures and _rooted(chain, anchors)
    if not failures and not trusted:
        failures.append(
            ValidationMessage(
                "failure", "signingCredential.untrusted", "signer does not chain to a trust anchor"
            )
        )
    state = (
        "Invalid"
        if any(f.code != "signingCredential.untrusted" for f in failures)
        else ("Trusted" if trusted else "Valid")
    )
    manifest = {
        "assertions": statement.get("assertions"),
        "claim_generator_info": statement.get("claim_generator_info"),
        "signature_info": {"common_name": _common_name(signer)},
        "label": f"detached:{asset.get('sha256', '')}",
    }
    return _report_from_manifest(
        p, state=state, binding="detached", manifest=manifest, messages=tuple(failures)
    )

