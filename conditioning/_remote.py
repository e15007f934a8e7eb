"""Releases to remote generators (the service's side of ``cameo generate`` on a generator host).

Two calls, each signed by the generator's own Ed25519 key (checked by the service):

1. :func:`release_sealed`: the same steps 0-2 as :func:`conditioning._generate.generate` (staging,
   screening of references, the gate's decision with every token verified and consumed), then the
   bundle is sealed to the generator's registered X25519 key (:func:`seal_bundle`) and a release
   row remembers what was released (claim, consumed tokens) for one use before an expiry;
2. :func:`finish_release`: the generator sends its outputs back; they are screened (steps 4-5 of
   ``generate``: an output showing an enrolled person no token covered is withheld and the call
   denied), watermarked, signed (C2PA) and recorded; only then are they returned.

The bundle's templates never leave the registry unsealed; the registry never holds the
generator's private key.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cameo import Encoders, GenerationRequest
from cameo.registry import Home, audit_append, engine_for, get_account, get_generator, transaction

from ._errors import ConditioningError, GateDenied, ScreeningDenied
from ._gate import Gate, notify
from ._screen import Screener

RELEASE_TTL = timedelta(minutes=10)
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".wav", ".mp4")


@dataclass(frozen=True)
class ConsumedToken:
    """What output screening and the audit need of a token the gate already verified and consumed."""

    jti: str
    owner: str
    purpose: str


class ReleaseRefused(ConditioningError):
    """The release named does not exist, is not this generator's, was used, expired or tampered."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        from cameo import Reason

        self.reasons = (Reason("release.invalid", message),)
        super().__init__(message)


def _mac(home_trust: Any, rid: str, generator: str, digest: str, detail: str, expires: int, state: str) -> str:
    from consent import state_mac

    return state_mac(home_trust.state_key, "release", rid, generator, digest, detail, str(expires), state)


def release_sealed(home: Home, request: GenerationRequest, tokens: list[str], *, generator: str, now: datetime,
                   encoders: Encoders) -> dict[str, Any]:
    """Decide at the gate and seal the bundle to ``generator``. Returns the release id, the sealed
    blob and its expiry. A denial raises :class:`GateDenied` (nothing sealed, nothing stored)."""
    from cameo import InvalidRequest, MediaError
    from cameo.registry._service_models import ReleaseRow

    from ._generate import _bind_target, authority_for, new_staging, release_claim
    from .adapters import get_adapter, validate_request
    from .adapters._sealed import seal_bundle

    eng = engine_for(home)
    with transaction(eng) as s:
        gen = get_generator(s, generator)
        if gen.adapter != "sealed" or gen.public_key is None:
            raise InvalidRequest(f"generator {generator!r} is not a remote (sealed) generator")
        recipient = bytes(gen.public_key)
    adapter = get_adapter("sealed", recipient_public_key=recipient, generator_id=generator)
    keyring = home.verify_keyring()
    vault = home.vault()
    authority = authority_for(home)
    staging = new_staging(home)
    gate: Gate | None = None
    try:
        refs = request.stage(staging / "references")
        call = {"prompt": request.prompt, "params": _bind_target(request, refs),
                "references": [str(r.path) for r in refs]}
        validate_request(adapter, call)
        screener = Screener(eng, vault, encoders, authority)
        try:
            screener.prepare(refs, digest=request.digest)
        except MediaError as e:
            raise InvalidRequest(f"reference {e} (screening refuses what it cannot look at)") from e
        gate = Gate(eng, keyring, vault, screener=screener)
        with gate.release(request, tokens, generator_id=generator, now=now) as bundle:
            adapter.check(bundle)
            sealed = seal_bundle(bundle, recipient, now=now, ttl=RELEASE_TTL)
            claim = release_claim(bundle, generator=generator, request_digest=request.digest,
                                  log_entries=gate.last_log_entries)
        decided = gate.last_decision
        assert decided is not None
        toks = [{"jti": v.token.jti, "owner": v.token.owner, "purpose": v.token.purpose}
                for v in decided.verdicts if v.token is not None]
    finally:
        if gate is not None:
            gate.close()
        shutil.rmtree(staging, ignore_errors=True)
    detail = json.dumps({"claim": claim, "tokens": toks}, sort_keys=True)
    expires = int((now + RELEASE_TTL).timestamp())
    from cameo.registry import trust_for

    trust = trust_for(eng)
    with transaction(eng) as s:
        s.add(ReleaseRow(id=sealed.export_id, generator=generator, request_digest=request.digest, detail=detail,
                         expires_at=expires, state="open",
                         mac=_mac(trust, sealed.export_id, generator, request.digest, detail, expires, "open")))
    from consent import fmt_time

    return {"release_id": sealed.export_id, "sealed": sealed.blob, "not_after": fmt_time(sealed.not_after),
            "generator": generator, "request_digest": request.digest, "cameos": claim["cameo_ids"],
            "token_ids": claim["token_ids"]}


def _claim_release(home: Home, release_id: str, generator: str, now: datetime) -> tuple[dict[str, Any], str]:
    """Mark the release used (once), after checking it is this generator's, open, unexpired and untampered."""
    from sqlalchemy import select

    from cameo.registry import trust_for
    from cameo.registry._service_models import ReleaseRow

    eng = engine_for(home)
    trust = trust_for(eng)
    with transaction(eng) as s:
        q = select(ReleaseRow).where(ReleaseRow.id == str(release_id)[:48])
        if eng.dialect.name == "postgresql":
            q = q.with_for_update()
        row = s.execute(q).scalar_one_or_none()
        if row is None or row.generator != generator:
            raise ReleaseRefused(f"no release {str(release_id)[:48]!r} for generator {generator!r}")
        from consent import state_mac_ok

        if not state_mac_ok(trust.state_key, row.mac, "release", row.id, row.generator, row.request_digest,
                            row.detail, str(row.expires_at), row.state):
            raise ReleaseRefused(f"release {row.id} does not verify (its row was altered)")
        if row.state != "open":
            raise ReleaseRefused(f"release {row.id} was already used")
        if row.expires_at <= int(now.timestamp()):
            raise ReleaseRefused(f"release {row.id} expired")
        row.state = "done"
        row.mac = _mac(trust, row.id, row.generator, row.request_digest, row.detail, row.expires_at, "done")
        return json.loads(row.detail), row.request_digest


def finish_release(home: Home, release_id: str, outputs: list[tuple[str, bytes]], *, generator: str, now: datetime,
                   encoders: Encoders) -> dict[str, Any]:
    """Screen, watermark, sign and record a remote generator's outputs for one release. Returns
    each output's name, bytes (watermarked and signed) and digest."""
    from cameo import InvalidRequest

    from ._generate import _sign_and_record, authority_for, new_staging

    if not outputs:
        raise InvalidRequest("a release is finished with at least one output")
    names = []
    for name, _ in outputs:
        base = Path(name).name
        if base != name or not base or base.startswith(".") or Path(base).suffix.lower() not in OUTPUT_SUFFIXES:
            raise InvalidRequest(f"output names are plain file names ending in {', '.join(OUTPUT_SUFFIXES)}")
        names.append(base)
    if len(set(names)) != len(names):
        raise InvalidRequest("two outputs have the same name")
    detail, request_digest = _claim_release(home, release_id, generator, now)
    claim = detail["claim"]
    toks = [ConsumedToken(t["jti"], t["owner"], t["purpose"]) for t in detail["tokens"]]
    eng = engine_for(home)
    authority = authority_for(home)
    staging = new_staging(home)
    try:
        work = staging / "outputs"
        work.mkdir(mode=0o700)
        files = []
        for name, data in outputs:
            f = work / name
            f.write_bytes(data)
            files.append(f)
        screener = Screener(eng, home.vault(), encoders, authority)
        found = screener.outputs(files, toks)  # type: ignore[arg-type]  # owner and purpose are what it reads
        if found:
            with transaction(eng) as s:
                for t in toks:
                    audit_append(s, "gate:output:withheld", now=now, subject=get_account(s, t.owner).id,
                                 detail={"generator": generator, "request_digest": request_digest, "token": t.jti,
                                         "reasons": [f.reason.as_dict() for f in found]})
                notify(lambda *a, **k: audit_append(s, *a, **k), found, generator_id=generator,
                       request=_Digest(request_digest), now=now)
            raise ScreeningDenied(tuple(f.reason for f in found))
        out_dir = staging / "signed"
        done = _sign_and_record(eng, files, claim=claim, authority=authority, generator=generator,
                                request=_Digest(request_digest), toks=toks, out_dir=out_dir, now=now)
        result = []
        for o in done:
            p = Path(o["file"])
            extra = [q for q in out_dir.iterdir() if q.name != p.name and q.name.startswith(p.name)]
            result.append({"name": p.name, "data": p.read_bytes(), "digest": o["digest"], "output_id": o["output_id"],
                           "watermark": o["watermark"],
                           "sidecars": [{"name": q.name, "data": q.read_bytes()} for q in extra]})
        return {"release_id": release_id, "generator": generator, "request_digest": request_digest,
                "outputs": result, "cameos": claim["cameo_ids"], "token_ids": claim["token_ids"]}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _Digest:
    """The one field of a request that signing and notification read, for a release whose request
    stays on the generator's host."""

    digest: str


__all__ = ["ConsumedToken", "GateDenied", "ReleaseRefused", "finish_release", "release_sealed"]
