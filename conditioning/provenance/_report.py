"""What a provenance check reports, and the certificate-chain checks every format shares."""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID


from ._authority import ProvenanceAuthority, _SIGNER_EKUS, _version


CONSENT_ASSERTION = "org.cameo.consent"


SOFT_BINDING_ASSERTION = "c2pa.soft-binding"


TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def _assertions(
    claim: Mapping[str, Any], generator: str | None, soft_binding: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    action: dict[str, Any] = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}
    if generator:
        action["softwareAgent"] = {"name": generator}
    actions = [action]
    out: list[dict[str, Any]] = []
    if soft_binding is not None:
        # the watermark was embedded before signing: the manifest's hash covers the marked pixels
        actions.append({"action": "c2pa.watermarked", "softwareAgent": {"name": "cameo", "version": _version()},
                        "parameters": {"alg": soft_binding["alg"]}})
        out.append({"label": SOFT_BINDING_ASSERTION,
                    "data": {"alg": soft_binding["alg"], "blocks": [{"scope": {}, "value": soft_binding["value"]}]}})
    return [{"label": "c2pa.actions", "data": {"actions": actions}}, {"label": CONSENT_ASSERTION, "data": dict(claim)},
            *out]


@dataclasses.dataclass(frozen=True)
class ValidationMessage:
    """One validator status: ``kind`` is success, informational or failure."""

    kind: str
    code: str
    explanation: str = ""


@dataclasses.dataclass(frozen=True)
class ProvenanceReport:
    """What a file's provenance says. ``state`` is the C2PA validation state (``Trusted``,
    ``Valid``, ``Invalid``) or ``Missing``; only ``Trusted`` with a cameo assertion verifies."""

    path: Path
    state: str
    valid: bool
    trusted: bool
    binding: str  # "embedded" | "sidecar" | "detached" | "none"
    claim: Mapping[str, Any]
    generator: str | None
    claim_generator: str | None
    actions: tuple[str, ...]
    digital_source_type: str | None
    signer: str | None
    manifest_label: str | None
    messages: tuple[ValidationMessage, ...]
    soft_binding: Mapping[str, str] | None = None  # {"alg", "value"} of a c2pa.soft-binding assertion

    @property
    def failures(self) -> tuple[ValidationMessage, ...]:
        return tuple(m for m in self.messages if m.kind == "failure")


def _anchors(authority: ProvenanceAuthority | None, trust_anchors: bytes | str | None) -> bytes:
    if (authority is None) == (trust_anchors is None):
        raise TypeError("pass exactly one of authority= or trust_anchors=")
    if authority is not None:
        return authority.trust_anchors
    assert trust_anchors is not None
    return trust_anchors.encode("ascii") if isinstance(trust_anchors, str) else bytes(trust_anchors)


def _report_from_manifest(
    p: Path,
    *,
    state: str,
    binding: str,
    manifest: Mapping[str, Any] | None,
    messages: tuple[ValidationMessage, ...],
) -> ProvenanceReport:
    manifest = manifest or {}
    claim: Mapping[str, Any] = {}
    soft: Mapping[str, str] | None = None
    actions: list[str] = []
    generator = source_type = None
    for assertion in manifest.get("assertions", []) or []:
        label = str(assertion.get("label", ""))
        data = assertion.get("data") or {}
        if label == CONSENT_ASSERTION and isinstance(data, dict):
            claim = types.MappingProxyType(data)
        elif label == SOFT_BINDING_ASSERTION and isinstance(data, dict):
            blocks = data.get("blocks") or [{}]
            value = blocks[0].get("value") if isinstance(blocks[0], dict) else None
            if isinstance(data.get("alg"), str) and isinstance(value, str):
                soft = types.MappingProxyType({"alg": data["alg"], "value": value})
        elif label == "c2pa.actions" or label.startswith("c2pa.actions.v"):
            for action in data.get("actions", []) or []:
                actions.append(str(action.get("action")))
                if action.get("action") == "c2pa.created":
                    source_type = action.get("digitalSourceType")
                    agent = action.get("softwareAgent")
                    generator = agent.get("name") if isinstance(agent, dict) else agent
    info = manifest.get("claim_generator_info") or []
    claim_generator = None
    if info and isinstance(info[0], dict):
        claim_generator = "/".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    sig = manifest.get("signature_info") or {}
    signer = sig.get("common_name") or sig.get("issuer")
    return ProvenanceReport(
        path=p,
        state=state,
        valid=state in ("Valid", "Trusted"),
        trusted=state == "Trusted",
        binding=binding,
        claim=claim,
        generator=generator,
        claim_generator=claim_generator,
        actions=tuple(actions),
        digital_source_type=source_type,
        signer=signer,
        manifest_label=manifest.get("label"),
        messages=messages,
        soft_binding=soft,
    )


def _messages(results: Mapping[str, Any] | None) -> tuple[ValidationMessage, ...]:
    active = (results or {}).get("activeManifest") or {}
    out: list[ValidationMessage] = []
    for kind in ("failure", "informational", "success"):
        for status in active.get(kind, []) or []:
            out.append(ValidationMessage(kind, str(status.get("code")), str(status.get("explanation", ""))))
    return tuple(out)


def _failed(p: Path, *, state: str, binding: str, code: str, text: str) -> ProvenanceReport:
    """A report with no verified provenance: nothing claimed, one failure message."""
    return ProvenanceReport(
        path=p,
        state=state,
        valid=False,
        trusted=False,
        binding=binding,
        claim={},
        generator=None,
        claim_generator=None,
        actions=(),
        digital_source_type=None,
        signer=None,
        manifest_label=None,
        messages=(ValidationMessage("failure", code, text),),
    )


def _missing(p: Path) -> ProvenanceReport:
    return _failed(p, state="Missing", binding="none", code="manifest.missing", text="no C2PA manifest found")


def _unreadable(p: Path, binding: str, error: Exception) -> ProvenanceReport:
    return _failed(p, state="Invalid", binding=binding, code="manifest.unreadable", text=str(error))


def _common_name(cert: x509.Certificate) -> str | None:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


def _chain_ok(chain: list[x509.Certificate]) -> bool:
    """Signer (CA false, signing EKU) issued by each next certificate (CA true)."""
    try:
        leaf_bc = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if leaf_bc.ca or not any(o in eku for o in _SIGNER_EKUS):
            return False
        for child, parent in itertools.pairwise(chain):
            if not parent.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return False
            child.verify_directly_issued_by(parent)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return True


def _rooted(chain: list[x509.Certificate], anchors: bytes) -> bool:
    """The last certificate of the chain was issued by one of the anchors (exact certificates)."""
    try:
        roots = x509.load_pem_x509_certificates(anchors)
    except ValueError:
        return False
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False

