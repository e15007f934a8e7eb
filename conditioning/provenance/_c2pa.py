"""C2PA manifests (c2pa-python): signing an output's manifest with the consent assertion and the soft
binding, and reading and validating one back."""

from __future__ import annotations

import datetime as dt
import io
import json
import mimetypes
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import c2pa

from .._errors import (
    ProvenanceError,
    ProvenanceInvalid,
    ProvenanceMissing,
    ProvenanceUntrusted,
    SigningFailed,
)

from ._authority import ProvenanceAuthority, _replace, _settings, _version
from ._detached import _inspect_detached, _sign_detached, detached_path
from ._report import CONSENT_ASSERTION, ProvenanceReport, TRAINED_ALGORITHMIC_MEDIA, _anchors, _assertions, _messages, _missing, _report_from_manifest, _unreadable


SIDECAR_SUFFIX = ".c2pa"


_IN_MEMORY_LIMIT = 256 * 1024 * 1024  # sign outputs up to this size in memory (see sign_output)


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF8", "image/gif"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
)


_BMFF_TYPES = frozenset(
    {"video/mp4", "video/quicktime", "video/x-m4v", "audio/mp4", "image/heic", "image/heif", "image/avif"}
)


def _media_type(path: Path, head: bytes) -> str | None:
    """The MIME type c2pa should sign ``path`` as, or None when the SDK cannot hash it."""
    for offset, magic, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return mime
    guessed = mimetypes.guess_type(path.name)[0]
    if head[4:8] == b"ftyp":  # ISO BMFF: MP4, MOV, M4A, HEIC, AVIF share one hashing scheme
        return guessed if guessed in _BMFF_TYPES else "video/mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if guessed and guessed in _builder_types():
        return guessed
    return None


_BUILDER_TYPES: frozenset[str] | None = None


def _builder_types() -> frozenset[str]:
    global _BUILDER_TYPES
    if _BUILDER_TYPES is None:
        _BUILDER_TYPES = frozenset(c2pa.Builder.get_supported_mime_types())
    return _BUILDER_TYPES


def _normalise_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(claim, Mapping):
        raise SigningFailed("the provenance claim must be a JSON object")
    try:
        out = json.loads(json.dumps(dict(claim), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SigningFailed(f"the provenance claim is not plain JSON: {e}") from e
    return out  # type: ignore[no-any-return,unused-ignore]


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`sign_output` puts a no-embed manifest store for ``path``."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def sign_output(
    path: str | os.PathLike[str],
    *,
    claim: Mapping[str, Any],
    authority: ProvenanceAuthority,
    generator: str | None = None,
    sidecar: bool = False,
    soft_binding: Mapping[str, str] | None = None,
) -> Path:
    """Sign the generated file at ``path`` in place and return ``path``.

    ``claim`` is the cameo assertion (JSON object), e.g. ``cameo_ids``, ``consent_digests``,
    ``grant_ids``, ``token_ids``, ``generator_id``, ``request_digest``. ``generator`` names the
    ``softwareAgent`` of the ``c2pa.created`` action; by default ``claim["generator_id"]`` (or
    ``claim["generator"]``). The file is replaced atomically; with ``sidecar=True`` (or for a format
    c2pa cannot sign) the file is left as it is and the manifest goes beside it (see
    :func:`sidecar_path`, :func:`detached_path`). Raises :class:`SigningFailed`; nothing is
    changed then. ``soft_binding`` (``{"alg": ..., "value": ...}``) names a watermark already
    embedded in the file: a ``c2pa.soft-binding`` assertion and a ``c2pa.watermarked`` action.
    """
    p = Path(path)
    body = _normalise_claim(claim)
    agent = generator or body.get("generator_id") or body.get("generator")
    if agent is not None and not isinstance(agent, str):
        agent = str(agent)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SigningFailed(f"cannot read {p.name}: {e.strerror}") from e
    if not data:
        raise SigningFailed(f"{p.name} is empty")
    mime = _media_type(p, data[:16])
    if mime is None:
        _sign_detached(p, data, body, agent, authority, soft_binding)
        return p

    manifest = {
        "claim_generator_info": [{"name": "cameo", "version": _version()}],
        "title": p.name,
        "assertions": _assertions(body, agent, soft_binding),
    }
    try:
        builder = c2pa.Builder(manifest, context=authority._signing_context())
        if sidecar:
            builder.set_no_embed()
        with authority._c2pa_signer() as signer:
            if sidecar:
                store = builder.sign(signer, mime, io.BytesIO(data), io.BytesIO())
                _replace(sidecar_path(p), store, 0o644)
                return p
            # Small outputs are signed in memory and written once: the SDK's many small writes
            # through Python stream callbacks cost ~30x the signing itself on a real file.
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=p.suffix)
            try:
                with os.fdopen(fd, "w+b") as out:
                    if len(data) <= _IN_MEMORY_LIMIT:
                        signed = io.BytesIO()
                        builder.sign(signer, mime, io.BytesIO(data), signed)
                        out.write(signed.getbuffer())
                    else:
                        builder.sign(signer, mime, io.BytesIO(data), out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, os.stat(p).st_mode & 0o777)
                os.replace(tmp, p)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except c2pa.C2paError as e:
        raise SigningFailed(f"cannot sign {p.name}: {e}") from e
    except OSError as e:
        raise SigningFailed(f"cannot write the signed {p.name}: {e.strerror}") from e
    return p


def inspect_output(
    path: str | os.PathLike[str],
    *,
    authority: ProvenanceAuthority | None = None,
    trust_anchors: bytes | str | None = None,
    now: dt.datetime | None = None,
) -> ProvenanceReport:
    """Read and validate a file's provenance without enforcing: always returns a report.

    Trust is judged against ``authority``'s root or the PEM ``trust_anchors`` (exactly one).
    The c2pa validator checks certificate validity against the system clock; ``now`` is used
    only for detached statements (default: the system clock, like c2pa).
    """
    p = Path(path)
    anchors = _anchors(authority, trust_anchors)
    try:
        head = p.open("rb").read(16)
    except OSError as e:
        raise ProvenanceMissing(f"cannot read {p.name}: {e.strerror}") from e
    mime = _media_type(p, head)
    if mime is None:
        if detached_path(p).exists():
            return _inspect_detached(p, anchors, now)
        return _missing(p)

    context = (
        authority._verification_context()
        if authority is not None
        else c2pa.Context.from_dict(_settings(anchors, signing=False))
    )
    binding = "embedded"
    manifest_data: bytes | None = None
    try:
        with p.open("rb") as f:
            try:
                reader = c2pa.Reader(mime, f, None, context)
            except c2pa.C2paError.ManifestNotFound:
                side = sidecar_path(p)
                if not side.exists():
                    if detached_path(p).exists():
                        return _inspect_detached(p, anchors, now)
                    return _missing(p)
                binding, manifest_data = "sidecar", side.read_bytes()
                f.seek(0)
                reader = c2pa.Reader(mime, f, manifest_data, context)
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as e:
        # A manifest that is there but cannot be parsed: the file or the store was damaged.
        return _unreadable(p, binding, e)
    except ValueError as e:  # the SDK handed back something that is not JSON
        return _unreadable(p, binding, e)
    except OSError as e:
        raise ProvenanceMissing(f"cannot read {p.name}: {e.strerror}") from e
    messages = _messages(store.get("validation_results"))
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest") or "")
    if not isinstance(manifest, dict):
        return _unreadable(p, binding, ProvenanceError("the manifest store names no active manifest"))
    state = str(store.get("validation_state") or "Invalid")
    return _report_from_manifest(p, state=state, binding=binding, manifest=manifest, messages=messages)


def verify_output(
    path: str | os.PathLike[str],
    *,
    authority: ProvenanceAuthority | None = None,
    trust_anchors: bytes | str | None = None,
    now: dt.datetime | None = None,
) -> ProvenanceReport:
    """Verify a file's provenance or raise. Returns the (trusted) report.

    1. A manifest must be there (embedded, ``.c2pa`` sidecar, or detached): else
       :class:`ProvenanceMissing`.
    2. It must validate: signature, hashes over the file's bytes, signer inside its validity:
       else :class:`ProvenanceInvalid` (the file or manifest changed after signing, or the signer
       expired). Checked before trust, since a tampered file is worse news than an unknown signer.
    3. Its signer must chain to our trust anchor: else :class:`ProvenanceUntrusted`.
    4. It must say what we sign: a ``c2pa.created`` action of trainedAlgorithmicMedia and the
       ``org.cameo.consent`` assertion: else :class:`ProvenanceInvalid`.
    """
    report = inspect_output(path, authority=authority, trust_anchors=trust_anchors, now=now)
    name = report.path.name
    if report.state == "Missing":
        raise ProvenanceMissing(f"{name} carries no provenance manifest")
    codes = tuple(m.code for m in report.failures)
    other = tuple(c for c in codes if c != "signingCredential.untrusted")
    if report.state == "Invalid" or other:
        detail = "; ".join(m.explanation or m.code for m in report.failures if m.code in other)
        raise ProvenanceInvalid(
            f"{name}: provenance does not validate ({detail or report.state})", codes=other or codes
        )
    if not report.trusted:
        raise ProvenanceUntrusted(
            f"{name}: manifest signed by {report.signer!r}, not by a chain rooted "
            "in the configured trust anchor"
        )
    if "c2pa.created" not in report.actions or report.digital_source_type != TRAINED_ALGORITHMIC_MEDIA:
        raise ProvenanceInvalid(
            f"{name}: manifest does not declare a trainedAlgorithmicMedia creation",
            codes=("cameo.actions.missing",),
        )
    if not report.claim:
        raise ProvenanceInvalid(
            f"{name}: manifest carries no {CONSENT_ASSERTION} assertion", codes=("cameo.consent.missing",)
        )
    return report

