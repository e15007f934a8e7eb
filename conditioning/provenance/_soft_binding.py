"""Soft binding: the watermark an output carries, the registry's record it points to, and the
resolution of a copy that lost its manifest.

At generation (before the manifest is signed):

1. an identifier is drawn at random (32 bits, ``secrets``) and looked up in ``outputs``; a draw
   already taken is drawn again. With N outputs on record a draw collides with probability
   N / 2**32 (2.3e-4 at a million outputs) and is simply retried; without the retry two of N
   random identifiers would collide with probability ~N**2 / 2**33 (one half at ~77,000 outputs).
   A concurrent call that drew the same identifier meanwhile fails on the primary key when it
   records, before anything is handed over;
2. the identifier is embedded in every image output (:mod:`conditioning._watermark`), the marked
   picture's perceptual hashes are taken (:mod:`conditioning._phash`), and the manifest names the
   mark (``c2pa.soft-binding``, ``c2pa.watermarked``);
3. the record (identifier, digest, media type, claim, hashes) is signed by the provenance signer
   (DSSE, chain attached) and written with the ``gate:output`` audit entries, in one transaction.

Audio and other non-image outputs carry no watermark: no audio watermark with offline weights
exists in any package here, and a classic one was not built; **audio relies on its manifest
alone** (its record is kept all the same, found by digest). No adapter writes video today.

Resolving a copy (:func:`resolve_watermark`), what is checked:

1. the reader must find the mark's pilot (:data:`conditioning._watermark.DETECT_THRESHOLD`), or
   the identifier it decodes must resolve *and* the content match (step 3): a picture cameo never
   made resolves to nothing;
2. the identifier (or, when the reader is unsure of a few bits, one of the 16 identifiers that
   flip its four least certain bits) must name a record whose signature verifies under our root;
3. the content must match the record: the pHash of the copy against the record's hash of the
   same crop (the one the reader measured) within :data:`conditioning._phash.MATCH_DISTANCE`
   bits. A confident mark naming a record whose content differs is a copied watermark: it
   **does not verify** (:class:`~conditioning._errors.ProvenanceInvalid`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from cameo.registry import OutputRecord

from . import _phash, _watermark
from .._errors import ProvenanceInvalid, SigningFailed

__all__ = ["RECORD_PAYLOAD_TYPE", "MarkedOutput", "Resolution", "draw_identifier", "mark_output",
           "record_output", "resolve_watermark"]

RECORD_PAYLOAD_TYPE = "application/vnd.cameo.output-record+json; version=1"
_DRAWS = 16
_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
                  "BMP": "image/bmp"}
_LIST_BITS = 4  # least certain bits tried both ways when the exact identifier names nothing


@dataclasses.dataclass(frozen=True)
class MarkedOutput:
    """One output ready to sign: its identifier, media type, and the marked picture's hashes
    (None for media that carry no watermark)."""

    path: Path
    identifier: str
    media_type: str
    phashes: tuple[str, ...] | None

    @property
    def soft_binding(self) -> dict[str, str] | None:
        return None if self.phashes is None else {"alg": _watermark.ALGORITHM, "value": self.identifier}


def draw_identifier(session: Session, taken: Sequence[str] = ()) -> str:
    """A fresh 32-bit identifier (8 hex digits) that no record (nor ``taken``) holds."""
    for _ in range(_DRAWS):
        ident = secrets.token_bytes(4).hex()
        if ident not in taken and session.get(OutputRecord, ident) is None:
            return ident
    raise SigningFailed("no free output identifier after 16 draws (the identifier space is full)")


def _load(path: Path) -> tuple[Any, np.ndarray]:
    from PIL import Image

    im: Any = Image.open(path)
    im.load()
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    return im, np.asarray(im)


def mark_output(path: Path, identifier: str) -> MarkedOutput:
    """Embed ``identifier`` in the image at ``path`` (rewritten in its own format), or leave a
    non-image (or too small a picture) as it is. Raises :class:`SigningFailed`."""
    from PIL import Image, UnidentifiedImageError

    from cameo import sniff_file

    try:
        kind = sniff_file(path)
    except OSError as e:
        raise SigningFailed(f"cannot read {path.name}: {e.strerror}") from e
    if kind is None or kind.kind != "image":
        return MarkedOutput(path, identifier, kind.mime if kind else "application/octet-stream", None)
    try:
        im, rgb = _load(path)
        fmt = Image.open(path).format or "PNG"
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise SigningFailed(f"cannot decode the output {path.name}: {e}") from e
    if fmt not in _IMAGE_FORMATS or min(rgb.shape[:2]) < _watermark.MIN_SIDE:
        return MarkedOutput(path, identifier, kind.mime, None)
    marked = _watermark.embed(rgb, int(identifier, 16))
    out = Image.fromarray(marked, im.mode)
    formats: dict[str, dict[str, Any]] = {"PNG": {"compress_level": 1}, "JPEG": {"quality": 95},
                                          "WEBP": {"lossless": True}}
    options = formats.get(fmt, {})
    try:
        out.save(path, format=fmt, **options)
    except OSError as e:
        raise SigningFailed(f"cannot write the marked {path.name}: {e.strerror}") from e
    return MarkedOutput(path, identifier, _IMAGE_FORMATS[fmt], tuple(_phash.crop_hashes(marked)))


def _record_body(*, identifier: str, digest: str, media_type: str, generator: str, request_digest: str,
                 claim: Mapping[str, Any], phashes: Sequence[str] | None, manifest_label: str | None,
                 created_at: str) -> dict[str, Any]:
    return {"id": identifier, "digest": digest, "media_type": media_type, "generator": generator,
            "request_digest": request_digest, "claim": dict(claim),
            "phash": list(phashes) if phashes is not None else None,
            "watermark": _watermark.ALGORITHM if phashes is not None else None,
            "manifest_label": manifest_label, "created_at": created_at}


def record_output(session: Session, marked: MarkedOutput, *, digest: str, claim: Mapping[str, Any],
                  generator: str, request_digest: str, manifest_label: str | None, authority: Any,
                  now: dt.datetime) -> OutputRecord:
    """Write the output's signed record in the caller's transaction."""
    from consent import pae as _pae

    created = now.astimezone(dt.UTC).isoformat()
    body = _record_body(identifier=marked.identifier, digest=digest, media_type=marked.media_type,
                        generator=generator, request_digest=request_digest, claim=claim,
                        phashes=marked.phashes, manifest_label=manifest_label, created_at=created)
    raw = rfc8785.dumps(body)
    envelope = {"payloadType": RECORD_PAYLOAD_TYPE, "payload": base64.b64encode(raw).decode(),
                "signatures": [{"alg": authority.algorithm,
                                "sig": base64.b64encode(authority._sign_bytes(_pae(RECORD_PAYLOAD_TYPE, raw))).decode()}],
                "x5chain": authority.chain_pem.decode("ascii")}
    row = OutputRecord(id=marked.identifier, digest=digest, media_type=marked.media_type, generator=generator,
                       request_digest=request_digest, manifest_label=manifest_label,
                       claim=json.dumps(dict(claim), sort_keys=True),
                       phash=json.dumps(list(marked.phashes)) if marked.phashes is not None else None,
                       envelope=json.dumps(envelope).encode(), created_at=created)
    session.add(row)
    session.flush()
    return row


def verified_record(row: OutputRecord, authority: Any) -> dict[str, Any]:
    """The record's signed body, if its signature verifies under our root and it says what the
    row says; else :class:`ProvenanceInvalid` (the row was edited, or not signed by us)."""
    from consent import pae as _pae

    from ._report import _chain_ok, _rooted

    try:
        env = json.loads(row.envelope)
        if env.get("payloadType") != RECORD_PAYLOAD_TYPE:
            raise ValueError("unknown payload type")
        raw = base64.b64decode(env["payload"], validate=True)
        sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)
        chain = x509.load_pem_x509_certificates(env["x5chain"].encode("ascii"))
        body = json.loads(raw)
        public = chain[0].public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, _pae(RECORD_PAYLOAD_TYPE, raw))
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(sig, _pae(RECORD_PAYLOAD_TYPE, raw), ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidSignature
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, InvalidSignature) as e:
        raise ProvenanceInvalid(f"the registry's record of output {row.id} does not verify",
                                codes=("cameo.record.signature",)) from e
    if not (_chain_ok(chain) and _rooted(chain, authority.trust_anchors)):
        raise ProvenanceInvalid(f"the record of output {row.id} is not signed by this registry",
                                codes=("cameo.record.untrusted",))
    same = (body.get("id") == row.id and body.get("digest") == row.digest
            and body.get("claim") == json.loads(row.claim)
            and body.get("phash") == (json.loads(row.phash) if row.phash else None))
    if not same:
        raise ProvenanceInvalid(f"the record of output {row.id} was altered after it was signed",
                                codes=("cameo.record.tampered",))
    return dict(body)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What the watermark of a picture led to. ``record`` is the verified record (None: nothing
    resolved); ``distance`` the pHash distance to it; ``detection`` the reader's findings."""

    detection: _watermark.Detection
    record: Mapping[str, Any] | None
    distance: int | None

    @property
    def verified(self) -> bool:
        return self.record is not None and self.distance is not None and self.distance <= _phash.MATCH_DISTANCE


def candidates(det: _watermark.Detection, margins: np.ndarray | None) -> list[str]:
    """The decoded identifier first, then the 15 others that flip its four least certain bits."""
    first = f"{det.identifier:08x}"
    if margins is None:
        return [first]
    weak = np.argsort(margins)[:_LIST_BITS]
    out = [first]
    for mask in range(1, 2**_LIST_BITS):
        ident = det.identifier
        for j, pos in enumerate(weak):
            if mask >> j & 1:
                ident ^= 1 << (_watermark.BITS - 1 - int(pos))
        out.append(f"{ident:08x}")
    return out


def read_picture(path: Path) -> np.ndarray | None:
    """The picture's pixels (RGB uint8), or None when the file is not an image this can decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def choose(det: _watermark.Detection, margins: np.ndarray | None, rgb: np.ndarray,
           records: Mapping[str, Sequence[str] | None]) -> tuple[str | None, int | None]:
    """The pure part of resolution: given the reader's findings and the pHashes of the records
    its candidate identifiers name (``records``: id -> hashes, only the ids that exist), the
    identifier it resolves to and the pHash distance, or (None, None). A record matching the
    content wins; else a confident mark's exact identifier is returned with its (too large)
    distance, for the caller to refuse as a copied watermark."""
    cands = candidates(det, margins)
    found = [c for c in cands if c in records]
    if not found:
        return None, None
    here = _phash.phash(rgb)
    crop = _phash.nearest_crop(det.crop)
    scored = [(_phash.distance(here, records[c][crop]), c) for c in found if records[c]]  # type: ignore[index]
    if scored and min(scored)[0] <= _phash.MATCH_DISTANCE:
        d, c = min(scored)
        return c, d
    if cands[0] in records and det.present:
        hashes = records[cands[0]]
        return cands[0], (_phash.distance(here, hashes[crop]) if hashes else None)
    return None, None


def resolve_watermark(session: Session, rgb: np.ndarray, authority: Any) -> Resolution:
    """Read the watermark and look its identifier up (see the module notes for each check).
    Raises :class:`ProvenanceInvalid` when the record it names does not verify."""
    det, margins = _watermark.detect_with_margins(rgb)
    cands = candidates(det, margins)
    rows = {r.id: r for r in session.scalars(select(OutputRecord).where(OutputRecord.id.in_(cands)))}
    ident, distance = choose(det, margins, rgb, {k: (json.loads(r.phash) if r.phash else None)
                                                 for k, r in rows.items()})
    if ident is None:
        return Resolution(det, None, None)
    return Resolution(det, verified_record(rows[ident], authority), distance)
