"""Enrollment and its siblings as single library calls for the CLI: enroll, show, match, delete,
protect, retention.

Enrollment order (nothing is written unless every step passes; one transaction at the end):
 1. every sample is checked and embedded (typed error naming the file or frame, exit 2);
 2. a video must pass liveness (exit 3 if not);
 3. the face and voice must not match another cameo or the protected list (exit 3);
 4. the owner signs a consent record committing to the digests of exactly these templates;
 5. the templates are sealed in the vault and the cameo stored, with its audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from consent import AUDIENCES, ConsentRecord, new_id

from .registry import _services as reg
from .registry._app import engine_for
from .registry._audit import serialise
from .registry._cameos import TemplateInput, add_protected, delete_cameo, describe, retention_run, seal_cameo
from .registry._db import transaction
from ._errors import AgeNotAttested, BadInput, IdentityConflict, ProtectedIdentity
from .registry._home import Home
from ._likeness import Encoders, LikenessDirectory, media_kind, probe

Progress = Callable[[str, int, int], None]


def _templates(encoders: Encoders, *, faces: list[Path], voices: list[Path], video: Path | None,
               progress: Progress | None) -> tuple[list[TemplateInput], dict[str, Any]]:
    from .biometrics._pipeline import extract_face_templates, extract_from_video, extract_voice_template

    def cb(label: str) -> Callable[[int, int], None] | None:
        return (lambda i, n: progress(label, i, n)) if progress else None

    out: list[TemplateInput] = []
    report: dict[str, Any] = {}
    if video is not None:
        v = extract_from_video(video, encoders.face, encoders.voice, cb("analysing video"))
        report["liveness"] = {"passed": v.liveness.passed, "metrics": _floats(v.liveness.metrics)}
        face, voice = v.face, v.voice
        out.append(TemplateInput("face", face.encoder_id.id, face.template, len(face.samples),
                                 {"max_spread": round(face.max_spread, 4), "source": "video"}))
        out.append(TemplateInput("voice", voice.encoder_id.id, voice.template, 1,
                                 {"voiced_seconds": round(voice.clips[0].voiced_seconds, 2), "source": "video"}))
        report["face_samples"], report["voice_clips"] = len(face.samples), 1
        return out, report
    if faces:
        f = extract_face_templates(faces, encoders.face, cb("embedding faces"))
        per = [{"source": s.source, "size_px": round(s.quality.size_px, 1), "sharpness": round(s.quality.sharpness, 1)}
               for s in f.samples]
        out.append(TemplateInput("face", f.encoder_id.id, f.template, len(f.samples),
                                 {"max_spread": round(f.max_spread, 4), "samples": per}))
        report["face_samples"] = len(f.samples)
    if voices:
        v2 = extract_voice_template(voices, encoders.voice, cb("embedding voice clips"))
        per = [{"source": c.source, "voiced_seconds": round(c.voiced_seconds, 2)} for c in v2.clips]
        out.append(TemplateInput("voice", v2.encoder_id.id, v2.template, len(v2.clips),
                                 {"min_similarity": round(v2.min_similarity, 4), "clips": per}))
        report["voice_clips"] = len(v2.clips)
    return out, report


def _floats(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(float(v), 4) if isinstance(v, (int, float)) else v) for k, v in d.items()}


def _not_someone_else(directory: LikenessDirectory, encoders: Encoders, templates: list[TemplateInput]) -> None:
    for t in templates:
        enc = encoders.face if t.modality == "face" else encoders.voice
        for hit in directory.search(t.modality, enc, t.vector, use="dedup"):
            if hit.match:
                if hit.kind == "protected":
                    raise ProtectedIdentity(f"this {t.modality} is on the registry's protected list")
                raise IdentityConflict(f"this {t.modality} already belongs to another cameo")


def _not_enrolled_yet(session: Any, handle: str) -> None:
    from .registry._cameos import cameo_of
    from ._errors import AlreadyEnrolled, NotEnrolled

    try:
        _, existing = cameo_of(session, handle)
    except NotEnrolled:
        return
    if existing.status == "active":
        raise AlreadyEnrolled(f"{handle} is already enrolled; `cameo delete {handle}` first to re-enroll")


def check_media(*, faces: list[Path], voices: list[Path], video: Path | None) -> None:
    if video is not None and (faces or voices):
        raise BadInput("enroll from a --video, or from --face photos and --voice clips, not both")
    if video is None and not faces:
        raise BadInput("give --face photos (and --voice clips), or a --video")


def check_enroll_options(*, faces: list[Path], voices: list[Path], video: Path | None, audience: str, adult: bool,
                         restrictions: list[str], expires: str | None) -> timedelta | None:
    """The owner's choices for an enrollment, checked before anything is uploaded or embedded
    (here, and on the owner's machine before a remote enrollment). Returns the consent's lifetime."""
    check_media(faces=faces, voices=voices, video=video)
    if audience not in AUDIENCES:
        raise BadInput(f"--audience must be one of {', '.join(AUDIENCES)}")
    if not adult:
        raise AgeNotAttested("the owner must attest to being 18 or over (--adult / omit --no-adult)")
    if any(len(r) > 200 or not r.strip() for r in restrictions) or len(restrictions) > 20:
        raise BadInput("restrictions are up to 20 non-empty texts of at most 200 characters")
    return reg.parse_duration(expires) if expires else None


def enroll(home: Home, handle: str, *, passphrase: str, faces: list[Path], voices: list[Path],
           video: Path | None, audience: str, restrictions: list[str], purposes: tuple[str, ...],
           adult: bool, expires: str | None, face_model: Path | None, progress: Progress | None,
           now: datetime) -> dict[str, Any]:
    life = check_enroll_options(faces=faces, voices=voices, video=video, audience=audience, adult=adult,
                                restrictions=restrictions, expires=expires)
    eng = engine_for(home)
    vault = home.vault()
    with transaction(eng) as s:  # fail fast on unknown handle, wrong passphrase, existing cameo
        reg.get_account(s, handle)
        key = home.load_key(handle, passphrase)
        _not_enrolled_yet(s, handle)
    encoders = Encoders(face_model)
    templates, report = _templates(encoders, faces=faces, voices=voices, video=video, progress=progress)
    with transaction(eng) as s:
        serialise(s)  # two enrollments of one face must not both pass the check below (PostgreSQL)
        _not_someone_else(LikenessDirectory.load(s, vault, exclude=handle), encoders, templates)
        acc = reg.get_account(s, handle)
        record = ConsentRecord.create(
            key, id=new_id("consent"), owner=handle, owner_key=acc.key_id, purposes=purposes,
            modalities=tuple(sorted({t.modality for t in templates})), audience=audience,
            restrictions=tuple(restrictions), templates=tuple(t.commitment() for t in templates),
            adult_attested=adult, created=now, expires=(now + life) if life else None)
        cameo = seal_cameo(s, vault, owner=acc, consent_bytes=record.to_bytes(), templates=templates, now=now)
    return {"handle": handle, "cameo_id": cameo.id, "consent_id": record.id, "consent_digest": record.digest,
            "audience": audience, "restrictions": restrictions, "modalities": list(record.modalities),
            "templates": [{"modality": t.modality, "encoder": t.encoder_id, "samples": t.samples,
                           "quality": t.quality} for t in templates], **report}


def show(home: Home, handle: str) -> dict[str, Any]:
    with transaction(engine_for(home)) as s:
        return describe(s, handle)


def match(home: Home, path: Path, *, face_model: Path | None, top: int = 3,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Which cameo (or protected entry), if any, the faces and voice in a file belong to, judged
    at the screening operating point (the gate's). Only candidates that match are named (voices
    with raw and normalised scores and the verdict at every operating point); for the rest only
    the best score is shown."""
    from ._errors import MediaError

    if not path.is_file():
        raise MediaError("no such file", source=path.name)
    if media_kind(path) == "unknown":
        raise MediaError(f"unsupported media type {path.suffix or '(none)'}", source=path.name)
    encoders = Encoders(face_model)
    if progress:
        progress(f"looking for faces and voices in {path.name}")
    found = probe(path, encoders)
    if progress:
        progress(f"searching the registry ({len(found['face'])} face(s), {len(found['voice'])} voice(s))")
    with transaction(engine_for(home)) as s:
        directory = LikenessDirectory.load(s, home.vault())
    results: dict[str, Any] = {"file": path.name, "faces": [], "voices": [], "matches": []}
    for modality, key in (("face", "faces"), ("voice", "voices")):
        enc = encoders.face if modality == "face" else encoders.voice
        for i, vec in enumerate(found[modality]):
            hits = directory.search(modality, enc, vec)
            named = [h.as_dict() for h in hits if h.match][:top]
            best = hits[0] if hits else None
            entry = {"index": i, "matches": named,
                     "best_score": round(best.score, 4) if best else None,
                     "metric": best.metric if best else None,
                     "threshold": enc.threshold}
            if best is not None and best.normalised is not None:  # calibrated (voice): both scores
                op = enc.operating_points["screening"]
                entry.update(best_snorm=round(best.normalised, 3),
                             operating_point={"use": op.use, "snorm_min": op.snorm_min, "raw_min": op.raw_min})
            results[key].append(entry)
            results["matches"] += [h["who"] for h in named if h["who"] not in results["matches"]]
    results["matched"] = bool(results["matches"])
    return results


def delete(home: Home, handle: str, *, passphrase: str, now: datetime) -> dict[str, Any]:
    with transaction(engine_for(home)) as s:
        reg.get_account(s, handle)
        home.load_key(handle, passphrase)  # only the owner deletes
        return delete_cameo(s, handle, now=now)


def protect(home: Home, label: str, *, faces: list[Path], voices: list[Path], face_model: Path | None,
            now: datetime, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Put a face and/or voice on the protected list (people who opted out: estates, public figures).

    An operator act: the entry is signed with the registry's binding key, which only the registry
    host holds. A likeness that matches an enrolled cameo is refused (that person can delete their
    cameo, or consent): the list cannot be turned against an owner."""
    if not faces and not voices:
        raise BadInput("give --face photos and/or --voice clips")
    if not label.strip() or len(label) > 128:
        raise BadInput("the label is a non-empty text of at most 128 characters")
    eng = engine_for(home)
    with transaction(eng) as s:
        from .registry._trust import trust_of

        if trust_of(s).binder is None:
            from ._errors import Denied, Reason

            raise Denied((Reason("operator.key", "protecting a likeness needs the registry's binding key"),))
    encoders = Encoders(face_model)
    if progress:
        progress(f"embedding samples ({len(faces)} photo(s), {len(voices)} clip(s))")
    templates, _ = _templates(encoders, faces=faces, voices=voices, video=None, progress=None)
    if progress:
        progress("checking the registry and signing the protected entries")
    ids = []
    with transaction(eng) as s:
        serialise(s)
        directory = LikenessDirectory.load(s, home.vault())
        for t in templates:
            enc = encoders.face if t.modality == "face" else encoders.voice
            for hit in directory.search(t.modality, enc, t.vector):
                if hit.match and hit.kind == "cameo":
                    raise IdentityConflict(f"this {t.modality} belongs to an enrolled cameo: its owner can delete "
                                           "their cameo first, or consent; it is not put on the protected list")
        for t in templates:
            ids.append(add_protected(s, home.vault(), label=label, template=t, now=now))
    return {"label": label, "entries": ids}


def retention(home: Home, *, max_idle_days: int, dry_run: bool, now: datetime) -> dict[str, Any]:
    if not 1 <= max_idle_days <= 36500:
        raise BadInput("--max-idle-days must be between 1 and 36500")
    with transaction(engine_for(home)) as s:
        return retention_run(s, now=now, max_idle=timedelta(days=max_idle_days), dry_run=dry_run)


# -- two-step enrollment (the service): the server computes, the owner signs on their own machine --
PENDING_TTL = timedelta(minutes=15)


def _pending_aead(home: Home) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(home.vault().derive_key(b"pending-enrollment"))


def enroll_begin(home: Home, handle: str, *, faces: list[Path], voices: list[Path], video: Path | None,
                 encoders: Encoders, now: datetime, progress: Progress | None = None) -> dict[str, Any]:
    """Step 1 of an enrollment through the service: embed the media, check liveness and that the
    likeness is nobody else's, and keep the templates sealed (under a key derived from the KEK)
    for :data:`PENDING_TTL`. Returns the template commitments the owner's consent record must
    name. Nothing here is a cameo: an enrollment never completed expires and leaves nothing."""
    import base64
    import json
    import os

    from sqlalchemy import delete as sql_delete

    from consent import new_id as _new_id

    from .registry._service_models import PendingEnrollment

    check_media(faces=faces, voices=voices, video=video)
    eng = engine_for(home)
    with transaction(eng) as s:
        account_id = reg.get_account(s, handle).id
        _not_enrolled_yet(s, handle)
    templates, report = _templates(encoders, faces=faces, voices=voices, video=video, progress=progress)
    with transaction(eng) as s:
        _not_someone_else(LikenessDirectory.load(s, home.vault(), exclude=handle), encoders, templates)
    eid = _new_id("enr")
    body = json.dumps({"templates": [{"modality": t.modality, "encoder": t.encoder_id, "samples": t.samples,
                                      "quality": t.quality, "vector": base64.b64encode(t.to_bytes()).decode()}
                                     for t in templates], "report": report}).encode()
    nonce = os.urandom(12)
    sealed = nonce + _pending_aead(home).encrypt(nonce, body, f"{eid}|{account_id}".encode())
    expires = now + PENDING_TTL
    with transaction(eng) as s:
        s.execute(sql_delete(PendingEnrollment).where(PendingEnrollment.expires_at <= int(now.timestamp())))
        s.execute(sql_delete(PendingEnrollment).where(PendingEnrollment.account_id == account_id))
        s.add(PendingEnrollment(id=eid, account_id=account_id, payload=sealed, expires_at=int(expires.timestamp())))
    from consent import fmt_time

    return {"enrollment_id": eid, "handle": handle, "expires": fmt_time(expires),
            "modalities": sorted({t.modality for t in templates}),
            "templates": [t.commitment().as_dict() for t in templates], **report}


def enroll_complete(home: Home, handle: str, enrollment_id: str, consent: bytes, *, now: datetime,
                    encoders: Encoders | None = None) -> dict[str, Any]:
    """Step 2: seal the pending templates under the owner-signed consent record (which must commit
    to exactly their digests, under the owner's key on file). Checks again, under the registry's
    write lock, that the likeness is nobody else's (someone may have enrolled it meanwhile)."""
    import base64
    import json

    import numpy as np
    from cryptography.exceptions import InvalidTag

    from consent import ConsentError, fmt_time
    from .registry._service_models import PendingEnrollment
    from ._errors import NotFound

    eng = engine_for(home)
    vault = home.vault()
    encoders = encoders or Encoders(None)
    with transaction(eng) as s:
        acc = reg.get_account(s, handle)
        row = s.get(PendingEnrollment, enrollment_id) if isinstance(enrollment_id, str) else None
        if row is None or row.account_id != acc.id or row.expires_at <= int(now.timestamp()):
            raise NotFound(f"no pending enrollment {str(enrollment_id)[:64]!r} for {handle} (it may have expired)")
        try:
            body = _pending_aead(home).decrypt(row.payload[:12], row.payload[12:], f"{row.id}|{acc.id}".encode())
        except InvalidTag:
            raise NotFound(f"pending enrollment {enrollment_id[:64]!r} does not open (tampered)") from None
        doc = json.loads(body)
        templates = [TemplateInput(t["modality"], t["encoder"], np.frombuffer(base64.b64decode(t["vector"]), "<f4"),
                                   int(t["samples"]), t["quality"]) for t in doc["templates"]]
        serialise(s)
        _not_someone_else(LikenessDirectory.load(s, vault, exclude=handle), encoders, templates)
        try:
            record = ConsentRecord.from_bytes(consent, reg.account_key(s, acc))
        except (ConsentError, ValueError) as e:
            from consent import SignatureInvalid

            if isinstance(e, SignatureInvalid):
                raise
            raise BadInput(f"the consent record is malformed: {e}") from e
        cameo = seal_cameo(s, vault, owner=acc, consent_bytes=consent, templates=templates, now=now)
        s.delete(row)
    return {"handle": handle, "cameo_id": cameo.id, "consent_id": record.id, "consent_digest": record.digest,
            "audience": record.audience, "restrictions": list(record.restrictions),
            "modalities": list(record.modalities), "expires": fmt_time(record.expires) if record.expires else None,
            "templates": [{"modality": t.modality, "encoder": t.encoder_id, "samples": t.samples,
                           "quality": t.quality} for t in templates], **doc["report"]}
