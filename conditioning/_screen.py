"""Likeness screening: nobody's face or voice goes in or out of a generator without their token.

- Reference media of a request (images, audio, video frames) are probed for faces and voices and
  searched against every enrolled template (and the protected list) of the same encoder. A match
  to a cameo without a valid token in the same call, or to the protected list, denies the call;
  the matched owner is told (an audit entry under their name).
- Media are recognised by their bytes, never their names (a JPEG called ``.bin`` is a JPEG), and
  screening looks only at the private copies of the bytes the request's digest covers; a
  reference that is not recognisable media, or does not decode, is refused.
- Faces are searched at the four right angles, small pictures scaled up
  (:func:`cameo._likeness.screen_faces`).
- A reference that carries cameo provenance (it was made from someone's cameo) is a remix: it
  needs that cameo's token with purpose ``remix`` in the same call.
- Generated outputs are screened the same way before they are returned: an output showing an
  enrolled person who has no token in the call is withheld.

Model inference and template decryption happen before the gate's decision transaction (they are
slow and need no lock); inside it only the mapping from matches to owners and tokens runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cameo.registry import transaction
from cameo import MediaError, Reason
from cameo import Encoders, Hit, LikenessDirectory, probe, sniff_file
from cameo.registry import Account, Cameo
from consent import PermissionToken


@dataclass(frozen=True)
class Finding:
    """A reason to deny, and whose account should hear about it (None: nobody's)."""

    reason: Reason
    subject: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class MediaScan:
    """What was found in a set of files: matching hits per file, and cameo provenance claims."""

    hits: list[tuple[str, Hit]] = field(default_factory=list)
    remixed_cameos: list[tuple[str, str]] = field(default_factory=list)  # (file, cameo_id)


def scan(paths: Sequence[Path], *, directory: LikenessDirectory, encoders: Encoders,
         authority: Any = None, names: Sequence[str] | None = None, outputs: bool = False,
         engine: Any = None) -> MediaScan:
    """Probe each file (recognised by its bytes, never its name) and search what it shows.

    A reference that is not recognisable media, or does not decode, is refused
    (:class:`~cameo._errors.MediaError`): what screening cannot look at does not go in. For
    ``outputs``, a file that is not media at all (a sealed export) has no likeness to show and is
    skipped, as is one recognised only by a weak frame-sync pattern that does not decode.
    ``names`` are the files' names in findings (default: each path's own name). With an
    ``authority``, each file's cameo provenance is read (its manifest, or with ``engine`` its
    watermark resolved in the registry: :func:`_provenance_cameos`)."""
    out = MediaScan()
    shown = list(names) if names is not None else [p.name for p in paths]
    best: dict[tuple[str, str, str, str], int] = {}
    for p, name in zip(paths, shown, strict=True):
        if outputs:
            try:
                kind = sniff_file(p)
            except OSError as e:
                raise MediaError(f"cannot read the output ({e.strerror})", source=name) from e
            if kind is None:
                continue
            try:
                found = probe(p, encoders, name=name)
            except MediaError:
                if kind.weak:
                    continue
                raise
        else:
            found = probe(p, encoders, name=name)
        for modality in ("face", "voice"):
            enc = encoders.face if modality == "face" else encoders.voice
            for vec in found[modality]:
                for hit in directory.search(modality, enc, vec):
                    if not hit.match:
                        continue
                    # one finding per person per file, at the closest score (a face found at
                    # several rotations or frames is one face)
                    key = (name, hit.who, hit.kind, hit.modality)
                    if key not in best:
                        best[key] = len(out.hits)
                        out.hits.append((name, hit))
                    elif _closer(hit, out.hits[best[key]][1]):
                        out.hits[best[key]] = (name, hit)
        if authority is not None:
            out.remixed_cameos += [(name, c) for c in _provenance_cameos(p, authority, engine)
                                   if (name, c) not in out.remixed_cameos]
    return out


def _closer(a: Hit, b: Hit) -> bool:
    return a.score > b.score if a.metric == "cosine" else a.score < b.score


def _provenance_cameos(path: Path, authority: Any, engine: Any = None) -> list[str]:
    """The cameos a reference was made from, by its provenance: a manifest that verifies, or,
    when it has none (stripped: re-saved, screenshotted), its watermark resolved to the
    registry's signed record of that output. Screening errs towards consent: a confident mark
    that names a record counts even when the content has since drifted from it (pHash too far
    to *verify* provenance); a weak read counts only when the content matches the record."""
    from ._errors import ProvenanceError, ProvenanceMissing
    from .provenance import verify_output

    try:
        report = verify_output(path, authority=authority)
    except ProvenanceMissing:
        return _watermark_cameos(path, authority, engine) if engine is not None else []
    except ProvenanceError:
        return []
    ids = report.claim.get("cameo_ids") or []
    return [c for c in ids if isinstance(c, str)]


def _watermark_cameos(path: Path, authority: Any, engine: Any) -> list[str]:
    from ._errors import ProvenanceError
    from .provenance import read_picture, resolve_watermark

    rgb = read_picture(path)  # a staged copy: recognised by its bytes, whatever its extension
    if rgb is None:
        return []
    try:
        with transaction(engine) as s:
            res = resolve_watermark(s, rgb, authority)
    except ProvenanceError:
        return []  # a record that does not verify names nobody
    if res.record is None or not (res.verified or res.detection.present):
        return []
    ids = (res.record.get("claim") or {}).get("cameo_ids") or []
    return [c for c in ids if isinstance(c, str)]


def resolve(session: Session, result: MediaScan) -> dict[str, tuple[str, str]]:
    """Account id and handle for every cameo a scan names (by handle or by cameo id)."""
    out: dict[str, tuple[str, str]] = {}
    handles = {hit.who for _, hit in result.hits if hit.kind == "cameo"}
    if handles:
        for aid, h in session.execute(select(Account.id, Account.handle).where(Account.handle.in_(handles))):
            out[h] = (aid, h)
    cids = {c for _, c in result.remixed_cameos}
    if cids:
        for cid, aid, h in session.execute(select(Cameo.id, Account.id, Account.handle)
                                           .join(Account, Account.id == Cameo.account_id).where(Cameo.id.in_(cids))):
            out[cid] = (aid, h)
    return out


def findings(result: MediaScan, ids: dict[str, tuple[str, str]], tokens: Sequence[PermissionToken], *,
             where: str) -> list[Finding]:
    """Map what a scan found to denials, given the tokens presented in this call. Pure."""
    owners = {t.owner for t in tokens}
    remixers = {t.owner for t in tokens if t.purpose == "remix"}
    out: list[Finding] = []
    for fname, hit in result.hits:
        score = {"score": round(hit.score, 4), "metric": hit.metric, "modality": hit.modality, "file": fname,
                 "where": where}
        if hit.kind == "protected":
            out.append(Finding(Reason("screen.protected", f"{where} {fname} shows a {hit.modality} on the protected list"),
                               None, score))
        elif hit.who not in owners:
            out.append(Finding(Reason("screen.unconsented",
                                      f"{where} {fname} shows an enrolled person's {hit.modality} "
                                      "without their token in this call"), ids.get(hit.who, (None, ""))[0], score))
    for fname, cameo_id in result.remixed_cameos:
        if cameo_id not in ids:
            continue  # the cameo was deleted; its face, if enrolled again, is caught by matching
        aid, handle = ids[cameo_id]
        if handle not in remixers:
            out.append(Finding(Reason("remix.unconsented", f"{where} {fname} was made from a cameo; remixing it "
                                                          "needs that cameo's token with purpose remix"),
                               aid, {"file": fname, "cameo": cameo_id, "where": where}))
    return out


LIKENESS_VERSION = "likeness_version"


class Screener:
    """Likeness screening for a gate: the in-memory directory of enrolled templates, the encoders
    and the provenance authority. The gate calls :meth:`ensure` before its transaction (slow
    probing, no lock held) and then the screener itself inside the transaction.

    The directory is kept between decisions and reloaded whenever the registry's likeness version
    (bumped in the transaction of every enrollment, deletion and protected-list entry) has moved:
    the gate reads that version inside its decision's transaction, and a decision whose scan was
    made against an older directory is scanned again (``stale``), so an enrollment or deletion
    committed through any worker or host is in force in the next decision of every other one."""

    def __init__(self, engine: Any, vault: Any, encoders: Encoders, authority: Any = None, *,
                 staging: Path | None = None) -> None:
        self._engine = engine
        self._vault = vault
        self.encoders = encoders
        self.authority = authority
        self._staging = staging
        self._directory: LikenessDirectory | None = None
        self._version: str | None = None
        self.references = MediaScan()
        self._ids: dict[str, tuple[str, str]] = {}
        self._prepared: tuple[str, str | None] | None = None  # (request digest, version) of the last scan

    def __repr__(self) -> str:
        return f"Screener({len(self._directory) if self._directory is not None else 'unloaded'})"

    @property
    def directory(self) -> LikenessDirectory:
        if self._directory is None:
            with transaction(self._engine) as s:
                self._version = likeness_version(s)
                self._directory = LikenessDirectory.load(s, self._vault)
        return self._directory

    def reload(self) -> None:
        self._directory = None
        self._prepared = None

    def _scan(self, files: Sequence[Path], *, authority: Any, names: Sequence[str] | None = None,
              outputs: bool = False) -> tuple[MediaScan, dict[str, tuple[str, str]]]:
        result = scan(files, directory=self.directory, encoders=self.encoders, authority=authority, names=names,
                      outputs=outputs, engine=self._engine)
        ids: dict[str, tuple[str, str]] = {}
        if result.hits or result.remixed_cameos:
            with transaction(self._engine) as s:
                ids = resolve(s, result)
        return result, ids

    def prepare(self, references: Sequence[Any], *, digest: str | None = None) -> None:
        """Probe the request's references (before the gate's transaction: slow, needs no lock).

        ``references`` are the private copies of the bound bytes
        (:meth:`cameo._request.GenerationRequest.stage`); plain paths are accepted too."""
        self.references, self._ids = MediaScan(), {}
        if references:
            paths = [getattr(r, "path", r) for r in references]
            names = [getattr(r, "name", None) or Path(p).name for r, p in zip(references, paths, strict=True)]
            self.references, self._ids = self._scan(paths, authority=self.authority, names=names)
        self._prepared = (digest, self._version) if digest is not None else None

    def ensure(self, request: Any) -> None:
        """Scan ``request``'s bound reference bytes unless this screener already did (for the
        same request digest, against the current directory)."""
        if not getattr(request, "references", ()):
            self.references, self._ids, self._prepared = MediaScan(), {}, (request.digest, None)
            return
        _ = self.directory
        if self._prepared == (request.digest, self._version):
            return
        import shutil
        import tempfile

        from cameo import InvalidRequest, MediaError

        base = self._staging
        if base is not None:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="screen-", dir=base))  # 0700
        try:
            refs = request.stage(folder / "references")
            try:
                self.prepare(refs, digest=request.digest)
            except MediaError as e:
                raise InvalidRequest(f"reference {e} (screening refuses what it cannot look at)") from e
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def stale(self, cur: Any, paramstyle: str) -> bool:
        """Inside the decision's transaction: has the likeness directory moved since the scan?"""
        if self._prepared is None or self._prepared[1] is None:
            return False  # nothing was searched (no references)
        cur.execute(f"SELECT value FROM registry_meta WHERE key = {paramstyle}", (LIKENESS_VERSION,))
        row = cur.fetchone()
        return (row[0] if row else None) != self._version

    def __call__(self, *, request: Any, tokens: Sequence[PermissionToken], now: Any) -> list[Finding]:
        return findings(self.references, self._ids, tokens, where="reference")

    def outputs(self, files: Sequence[Path], tokens: Sequence[PermissionToken]) -> list[Finding]:
        result, ids = self._scan(files, authority=None, outputs=True)
        return findings(result, ids, tokens, where="output")


def likeness_version(session: Session) -> str | None:
    from cameo.registry import Meta

    row = session.get(Meta, LIKENESS_VERSION)
    return row.value if row is not None else None


class UnsafeNoScreening:
    """A screener that screens nothing: reference media with someone else's enrolled face pass.

    For tests of the gate's own steps and for generators whose requests can carry no media. The
    name says what it does, and making one warns (:class:`UnsafeScreeningWarning`)."""

    def __init__(self) -> None:
        import warnings

        from ._errors import UnsafeScreeningWarning

        warnings.warn("UnsafeNoScreening: this gate does not screen reference media for enrolled likenesses",
                      UnsafeScreeningWarning, stacklevel=2)

    def __repr__(self) -> str:
        return "UnsafeNoScreening()"

    def ensure(self, request: Any) -> None:
        return None

    def stale(self, cur: Any, paramstyle: str) -> bool:
        return False

    def __call__(self, *, request: Any, tokens: Sequence[PermissionToken], now: Any) -> list[Finding]:
        return []
