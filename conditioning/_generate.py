"""`cameo generate`: one generation call through the gate.

 0. stale staging folders of dead processes are removed; this call's own staging folder is made
    under ``CAMEO_HOME/staging/<pid>-<random>`` (0700: never a shared temporary directory);
 1. the request's bound reference bytes (read once when it was loaded, the bytes its digest covers)
    are staged there as private copies; the adapter validates every parameter it will read
    (nothing is consumed for a bad seed); the copies are probed for likenesses (faces, voices)
    and cameo provenance before the decision (slow work, no lock held);
 2. the gate decides in one transaction: every token verified, screening applied, uses consumed;
 3. the adapter checks the bundle fits its model and generates into the staging folder from the
    staged copies only (never the caller's paths); the bundle's tensors are wiped when the call
    ends;
 4. outputs are screened: one showing an enrolled person without a token is withheld (deleted)
    and the call is denied;
 5. each image output gets an invisible watermark carrying a fresh 32-bit output identifier
    (:mod:`conditioning._soft_binding`), then a C2PA manifest (or a signed sidecar) naming the
    cameos, consent digests, grants and tokens and the watermark (soft binding); the registry's
    signed record of each output and the owners' ``gate:output`` entries are written in one
    transaction; only then are the outputs moved into ``--out``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cameo.registry import engine_for
from cameo.registry import audit_append
from cameo.registry import transaction
from cameo.registry import Home
from cameo import Encoders
from cameo.registry import get_account, get_generator
from cameo import GenerationRequest, StagedReference, file_digest

from ._errors import ScreeningDenied
from ._gate import Digested, Gate, notify
from ._screen import Screener


def authority_for(home: Home) -> Any:
    from .provenance import ProvenanceAuthority

    return ProvenanceAuthority.load(home.provenance_dir)


def generate(home: Home, request: GenerationRequest, tokens: list[str], *, generator: str, out_dir: Path,
             now: datetime, face_model: Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from cameo import InvalidRequest, MediaError

    from .adapters import get_adapter, validate_request

    eng = engine_for(home)
    with transaction(eng) as s:
        gen = get_generator(s, generator)
        adapter_name, config, public_key = gen.adapter, json.loads(gen.config), gen.public_key
    keyring = home.verify_keyring()  # from the key files, never from database rows
    config.pop("public_key_b64", None)
    if adapter_name == "sealed":
        config.update(recipient_public_key=public_key, generator_id=generator)
    adapter = get_adapter(adapter_name, **config)
    say = progress or (lambda _stage: None)
    gate: Gate | None = None
    staging = new_staging(home)  # 0
    try:
        say(f"staging {len(request.reference_names)} reference(s)")
        refs = request.stage(staging / "references")  # 1
        params = _bind_target(request, refs)
        call = {"prompt": request.prompt, "params": params, "references": [str(r.path) for r in refs]}
        validate_request(adapter, call)
        vault = home.vault()
        authority = authority_for(home)
        screener = Screener(eng, vault, Encoders(face_model), authority)
        say(f"screening {len(refs)} reference(s) for enrolled faces and voices")
        try:
            screener.prepare(refs, digest=request.digest)  # (the gate reuses this scan)
        except MediaError as e:
            raise InvalidRequest(f"reference {e} (screening refuses what it cannot look at)") from e
        gate = Gate(eng, keyring, vault, screener=screener)
        work = staging / "outputs"
        work.mkdir(mode=0o700)
        say(f"verifying {len(tokens)} token(s) at the gate")
        with gate.release(request, tokens, generator_id=generator, now=now) as bundle:  # 2
            adapter.check(bundle)  # 3
            say(f"generating with {generator}")
            files = [Path(f) for f in adapter.generate(bundle, call, work)]
            claim = release_claim(bundle, generator=generator, request_digest=request.digest,
                                  log_entries=gate.last_log_entries)
        staged = work.resolve()
        # only the declared outputs the generator wrote into its folder are screened, signed and
        # handed over; anything else it left there (or a path elsewhere) is discarded
        files = [f for f in files if f.resolve().is_relative_to(staged) and f.resolve() != staged]
        decided = gate.last_decision
        assert decided is not None
        toks = [v.token for v in decided.verdicts if v.token is not None]  # verified once, by the gate
        say(f"screening {len(files)} output(s)")
        found = screener.outputs(files, toks)  # 4
        if found:
            with transaction(eng) as s:
                for f in files:
                    f.unlink(missing_ok=True)
                for t in toks:
                    owner = get_account(s, t.owner).id
                    audit_append(s, "gate:output:withheld", now=now, subject=owner,
                                 detail={"generator": generator, "request_digest": request.digest,
                                         "token": t.jti, "reasons": [f.reason.as_dict() for f in found]})
                notify(lambda *a, **k: audit_append(s, *a, **k), found, generator_id=generator, request=request,
                       now=now)
        if found:
            raise ScreeningDenied(tuple(f.reason for f in found))
        say("watermarking and signing provenance")
        outputs = _sign_and_record(eng, files, claim=claim, authority=authority, generator=generator,
                                   request=request, toks=toks, out_dir=out_dir, now=now)  # 5
        return {"generator": generator, "request_digest": request.digest, "outputs": outputs,
                "cameos": claim["cameo_ids"], "token_ids": claim["token_ids"]}
    finally:
        if gate is not None:
            gate.close()  # its kept connection goes back to the pool
        shutil.rmtree(staging, ignore_errors=True)


def release_claim(bundle: Any, *, generator: str, request_digest: str, log_entries: Any) -> dict[str, Any]:
    """What a released output's provenance claims: the cameos and their consent digests, grants
    and tokens, the restrictions to honour, the generator, the request, and the release's audit
    entries (one per cameo: each provable in the transparency log)."""
    return {"cameo_ids": [c.cameo_id for c in bundle.cameos],
            "consent_digests": [c.consent_digest for c in bundle.cameos],
            "grant_ids": [c.grant_id for c in bundle.cameos],
            "token_ids": [c.token_id for c in bundle.cameos],
            "restrictions": sorted({r for c in bundle.cameos for r in c.restrictions}),
            "generator_id": generator, "request_digest": request_digest, "log_entry_ids": list(log_entries)}


def _sign_and_record(eng: Any, files: list[Path], *, claim: dict[str, Any], authority: Any, generator: str,
                     request: Digested, toks: list[Any], out_dir: Path, now: datetime) -> list[dict[str, Any]]:
    """Step 5: watermark, sign, record, hand over."""
    from .provenance import detached_path, inspect_output, sidecar_path, sign_output
    from .provenance import draw_identifier, mark_output, record_output

    with transaction(eng) as s:  # identifiers drawn at random, none already on record
        idents: list[str] = []
        for _ in files:
            idents.append(draw_identifier(s, idents))
    marked = []
    for f, ident in zip(files, idents, strict=True):
        m = mark_output(f, ident)  # before signing: the manifest's hash covers the marked pixels
        sign_output(f, claim=claim, authority=authority, generator=generator, soft_binding=m.soft_binding)
        marked.append(m)
    marked.sort(key=lambda m: m.path)
    digests = {m.path: file_digest(m.path) for m in marked}
    with transaction(eng) as s:
        for m in marked:
            label = inspect_output(m.path, authority=authority).manifest_label
            record_output(s, m, digest=digests[m.path], claim=claim, generator=generator,
                          request_digest=request.digest, manifest_label=label, authority=authority, now=now)
        for t in toks:
            audit_append(s, "gate:output", now=now, subject=get_account(s, t.owner).id,
                         detail={"generator": generator, "request_digest": request.digest, "token": t.jti,
                                 "outputs": [digests[m.path] for m in marked]})
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for m in marked:
        f = m.path
        for src in (f, sidecar_path(f), detached_path(f)):
            if src is f or src.exists():
                shutil.move(str(src), out_dir / src.name)
        outputs.append({"file": str(out_dir / f.name), "digest": digests[f], "output_id": m.identifier,
                        "watermark": m.soft_binding is not None})
    return outputs


def staging_root(home: Home) -> Path:
    """Where generate stages reference copies and outputs: inside the registry's home (0700),
    never a shared temporary directory, so an interrupted call leaves nothing where others look."""
    return home.path / "staging"


def new_staging(home: Home) -> Path:
    """A fresh 0700 folder ``staging/<pid>-<random>`` for one call, after removing the folders of
    processes that are no longer alive (a call killed with SIGKILL cannot clean up after itself)."""
    root = staging_root(home)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    remove_stale_staging(home)
    folder = root / f"{os.getpid()}-{secrets.token_hex(8)}"
    folder.mkdir(mode=0o700)
    return folder


def remove_stale_staging(home: Home) -> list[str]:
    """Remove staging folders whose process (the pid in the folder's name) is gone. Returns their
    names. Folders of live processes (this one included) are left alone."""
    root = staging_root(home)
    removed: list[str] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return True
    return True


def _bind_target(request: GenerationRequest, refs: tuple[StagedReference, ...] = ()) -> dict[str, Any]:
    """A media parameter an adapter reads (inswapper's ``target``) must be one of the request's
    references: only those are hashed into the digest the token binds, and screened. It is
    mapped to the staged copy of that reference's bound bytes (never the caller's path)."""
    from cameo import InvalidRequest

    params = dict(request.params)
    if "target" not in params:
        return params
    t = params["target"]
    names = request.reference_names
    if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(names):
        index = t
    elif isinstance(t, str) and t and Path(t).name in names:
        index = names.index(Path(t).name)
    else:
        raise InvalidRequest("params.target must name one of the request's references (by index or file name): "
                             "only references are bound by the token and screened")
    if index >= len(refs):
        raise InvalidRequest("params.target names a reference that was not staged")
    params["target"] = str(refs[index].path)
    return params


def provenance_verify(home: Home, path: Path) -> dict[str, Any]:
    """Where a file's provenance comes from, verified.

    1. Its C2PA manifest (embedded, sidecar or detached), when it has one: it must verify
       (else exit 3, as before); ``source`` is ``manifest``.
    2. Else its watermark (images): the identifier must resolve to this registry's signed record
       and the content must match the record's perceptual hash (see
       :mod:`conditioning._soft_binding`); ``source`` is ``watermark``. A confident watermark on
       other content does not verify (:class:`ProvenanceInvalid`, exit 3).
    3. Else :class:`ProvenanceMissing` (exit 4): no provenance.
    """
    from ._errors import ProvenanceInvalid, ProvenanceMissing
    from .provenance import TRAINED_ALGORITHMIC_MEDIA, verify_output
    from .provenance import read_picture, resolve_watermark

    authority = authority_for(home)
    try:
        report = verify_output(path, authority=authority)
    except ProvenanceMissing:
        if _manifest_traces(path):  # a manifest is there but could not be found: damaged, not stripped
            raise ProvenanceInvalid(f"{path.name}: a C2PA manifest is present but cannot be read (damaged)",
                                    codes=("manifest.unreadable",)) from None
    else:
        doc = manifest_summary(path, report)
        return {**doc, "log": _log_proofs(home, doc["claim"])}
    rgb = read_picture(path)
    if rgb is not None:
        with transaction(engine_for(home)) as s:
            res = resolve_watermark(s, rgb, authority)
        if res.record is not None and res.verified:
            rec = res.record
            claim = dict(rec.get("claim") or {})
            return {"file": path.name, "source": "watermark", "output_id": rec["id"], **_claim_summary(claim),
                    "state": "Trusted", "trusted": True, "binding": "watermark", "generator": rec.get("generator"),
                    "actions": [], "digital_source_type": TRAINED_ALGORITHMIC_MEDIA, "signer": None,
                    "soft_binding": {"alg": rec.get("watermark"), "value": rec["id"]},
                    "watermark": {**res.detection.as_dict(), "phash_distance": res.distance},
                    "record_digest": rec.get("digest"), "claim": claim, "log": _log_proofs(home, claim)}
        if res.record is not None:
            raise ProvenanceInvalid(
                f"{path.name}: its watermark names output {res.record['id']}, but the content does not match "
                f"that output's record (perceptual hash {res.distance} bits apart): a copied watermark does "
                "not verify", codes=("cameo.watermark.mismatch",))
    raise ProvenanceMissing(f"{path.name}: no provenance: no C2PA manifest, and no watermark of this registry")


def manifest_summary(path: Path, report: Any) -> dict[str, Any]:
    """What ``provenance verify`` prints of a verified C2PA manifest (here, and on a party's
    machine against the registry's pinned trust root)."""
    claim = dict(report.claim)
    soft = dict(report.soft_binding) if report.soft_binding else None
    return {"file": path.name, "source": "manifest", "output_id": soft["value"] if soft else None,
            **_claim_summary(claim), "state": report.state, "trusted": report.trusted,
            "binding": report.binding, "generator": report.generator, "actions": list(report.actions),
            "digital_source_type": report.digital_source_type, "signer": report.signer,
            "soft_binding": soft, "claim": claim}


def _manifest_traces(path: Path) -> bool:
    """Whether the file's bytes hold a C2PA manifest store (a JUMBF box labelled c2pa, or PNG's
    caBX chunk) that the reader did not find: then the file was damaged, and its watermark is
    not asked (a stripped copy, re-encoded, has none of these)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return b"caBX" in data or (b"jumb" in data and b"c2pa" in data)


def _claim_summary(claim: dict[str, Any]) -> dict[str, Any]:
    return {"cameos": list(claim.get("cameo_ids") or []), "consent_digests": list(claim.get("consent_digests") or []),
            "tokens": list(claim.get("token_ids") or []), "grants": list(claim.get("grant_ids") or []),
            "log_entries": [x for x in claim.get("log_entry_ids") or [] if isinstance(x, str)]}


def _log_proofs(home: Home, claim: dict[str, Any]) -> list[dict[str, Any]]:
    """For each log entry the claim names: its inclusion proof in the latest signed checkpoint of
    this registry's transparency log (``proof``), or why there is none (``status``: ``pending``
    until integrated, ``unknown`` if this registry has no such entry)."""
    from cameo.registry import LogError, NotIntegrated, UnknownEntry, inclusion_proof

    out: list[dict[str, Any]] = []
    ids = _claim_summary(claim)["log_entries"]
    if not ids:
        return out
    with transaction(engine_for(home)) as s:
        for eid in ids:
            try:
                out.append({"entry_id": eid, "status": "integrated", "proof": inclusion_proof(s, eid)})
            except NotIntegrated:
                out.append({"entry_id": eid, "status": "pending", "proof": None})
            except UnknownEntry:
                out.append({"entry_id": eid, "status": "unknown", "proof": None})
            except LogError:
                out.append({"entry_id": eid, "status": "pending", "proof": None})
    return out

