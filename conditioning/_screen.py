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

from cameo._db import transaction
from cameo._errors import MediaError, Reason
from cameo._likeness import Encoders, Hit, LikenessDirectory, probe, sniff_file
from cameo._models import Account, Cameo
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
         authority: Any = None, names: Sequence[str] | None = None, outputs: bool = False) -> MediaScan:
    """Probe each file (recognised by its bytes, never its name) and search what it shows.

    A reference that is not recognisable media, or does not decode, is refused
    (:class:`~cameo._errors.MediaError`): what screening cannot look at does not go in. For
    ``outputs``, a file that is not media at all (a sealed export) has no likeness to show and is
    skipped, as is one recognised only by a weak frame-sync pattern that does not decode.
    ``names`` are the files' names in findings (default: each path's own name)."""
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
            out.remixed_cameos += [(name, c) for c in _provenance_cameos(p, authority)
                                   if (name, c) not in out.remixed_cameos]
    return out


def _closer(a: Hit, b: Hit) -> bool:
    return a.score > b.score if a.metric == "cosine" else a.score < b.score


def _provenance_cameos(path: Path, authority: Any) -> list[str]:
    from ._errors import ProvenanceError
    from ._provenance import verify_output

    try:
        report = verify_output(path, authority=authority)
    except ProvenanceError:
        return []
    ids = report.claim.get("cameo_ids") or []
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


class Screener:
    """Holds the directory and encoders for one call; the gate calls it inside its transaction."""

    def __init__(self, engine: Any, vault: Any, encoders: Encoders, authority: Any = None) -> None:
        self._engine = engine
        self._vault = vault
        self.encoders = encoders
        self.authority = authority
        self._directory: LikenessDirectory | None = None
        self.references = MediaScan()
        self._ids: dict[str, tuple[str, str]] = {}

    @property
    def directory(self) -> LikenessDirectory:
        if self._directory is None:
            with transaction(self._engine) as s:
                self._directory = LikenessDirectory.load(s, self._vault)
        return self._directory

    def _scan(self, files: Sequence[Path], *, authority: Any, names: Sequence[str] | None = None,
              outputs: bool = False) -> tuple[MediaScan, dict[str, tuple[str, str]]]:
        result = scan(files, directory=self.directory, encoders=self.encoders, authority=authority, names=names,
                      outputs=outputs)
        ids: dict[str, tuple[str, str]] = {}
        if result.hits or result.remixed_cameos:
            with transaction(self._engine) as s:
                ids = resolve(s, result)
        return result, ids

    def prepare(self, references: Sequence[Any]) -> None:
        """Probe the request's references (before the gate's transaction: slow, needs no lock).

        ``references`` are the private copies of the bound bytes
        (:meth:`cameo._request.GenerationRequest.stage`); plain paths are accepted too."""
        if references:
            paths = [getattr(r, "path", r) for r in references]
            names = [getattr(r, "name", None) or Path(p).name for r, p in zip(references, paths, strict=True)]
            self.references, self._ids = self._scan(paths, authority=self.authority, names=names)

    def __call__(self, *, request: Any, tokens: Sequence[PermissionToken], now: Any) -> list[Finding]:
        return findings(self.references, self._ids, tokens, where="reference")

    def outputs(self, files: Sequence[Path], tokens: Sequence[PermissionToken]) -> list[Finding]:
        result, ids = self._scan(files, authority=None, outputs=True)
        return findings(result, ids, tokens, where="output")
