"""`cameo generate`: one generation call through the gate.

 1. the request and its reference media are loaded; references are probed for likenesses
    (faces, voices) and cameo provenance before the decision (slow work, no lock held);
 2. the gate decides in one transaction: every token verified, screening applied, uses consumed;
 3. the adapter checks the bundle fits its model and generates into a private staging folder;
    the bundle's tensors are wiped when the call ends;
 4. outputs are screened: one showing an enrolled person without a token is withheld (deleted)
    and the call is denied;
 5. each output gets a C2PA manifest (or a signed sidecar) naming the cameos, consent digests,
    grants and tokens; only then is it moved into ``--out``; the owners' logs get the output digest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from cameo._app import engine_for
from cameo._audit import append as audit_append
from cameo._db import transaction
from cameo._home import Home
from cameo._likeness import Encoders
from cameo._registry import get_account, get_generator, token_keyring
from cameo._request import GenerationRequest, file_digest

from ._errors import ScreeningDenied
from ._gate import Gate, notify
from ._screen import Screener


def authority_for(home: Home) -> Any:
    from ._provenance import ProvenanceAuthority

    return ProvenanceAuthority.load(home.provenance_dir)


def generate(home: Home, request: GenerationRequest, tokens: list[str], *, generator: str, out_dir: Path,
             now: datetime, face_model: Path | None = None) -> dict[str, Any]:
    from ._adapters import get_adapter

    params = _bind_target(request)
    eng = engine_for(home)
    with transaction(eng) as s:
        gen = get_generator(s, generator)
        adapter_name, config, public_key = gen.adapter, json.loads(gen.config), gen.public_key
        keyring = token_keyring(s, None)
    config.pop("public_key_b64", None)
    if adapter_name == "sealed":
        config.update(recipient_public_key=public_key, generator_id=generator)
    adapter = get_adapter(adapter_name, **config)
    vault = home.vault()
    authority = authority_for(home)
    screener = Screener(eng, vault, Encoders(face_model), authority)
    screener.prepare(list(request.references))  # 1
    gate = Gate(eng, keyring, vault, screener=screener)
    staging = Path(tempfile.mkdtemp(prefix=".cameo-staging-"))
    try:
        with gate.release(request, tokens, generator_id=generator, now=now) as bundle:  # 2
            adapter.check(bundle)  # 3
            files = [Path(f) for f in adapter.generate(bundle, {"prompt": request.prompt, "params": params,
                                                                "references": list(request.references)},
                                                       staging)]
            claim = {"cameo_ids": [c.cameo_id for c in bundle.cameos],
                     "consent_digests": [c.consent_digest for c in bundle.cameos],
                     "grant_ids": [c.grant_id for c in bundle.cameos],
                     "token_ids": [c.token_id for c in bundle.cameos],
                     "restrictions": sorted({r for c in bundle.cameos for r in c.restrictions}),
                     "generator_id": generator, "request_digest": request.digest}
        toks = _tokens(keyring, tokens)
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
        outputs = []
        for f in files:  # 5
            from ._provenance import sign_output

            sign_output(f, claim=claim, authority=authority, generator=generator)
        from ._provenance import detached_path, sidecar_path

        out_dir.mkdir(parents=True, exist_ok=True)
        staged = staging.resolve()
        # only the declared outputs (screened and signed) and their manifests leave staging;
        # anything else the generator left there was neither, and is discarded with the folder
        for f in sorted(files):
            if not f.resolve().is_relative_to(staged):
                continue
            for src in (f, sidecar_path(f), detached_path(f)):
                if src is f or src.exists():
                    shutil.move(str(src), out_dir / src.name)
            dest = out_dir / f.name
            outputs.append({"file": str(dest), "digest": file_digest(dest)})
        with transaction(eng) as s:
            for t in toks:
                audit_append(s, "gate:output", now=now, subject=get_account(s, t.owner).id,
                             detail={"generator": generator, "request_digest": request.digest, "token": t.jti,
                                     "outputs": [o["digest"] for o in outputs]})
        return {"generator": generator, "request_digest": request.digest, "outputs": outputs,
                "cameos": claim["cameo_ids"], "token_ids": claim["token_ids"]}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _bind_target(request: GenerationRequest) -> dict[str, Any]:
    """A media parameter an adapter reads (inswapper's ``target``) must be one of the request's
    references: only those are hashed into the digest the token binds, and screened."""
    from cameo._errors import InvalidRequest

    params = dict(request.params)
    if "target" not in params:
        return params
    t = params["target"]
    refs = [p.resolve() for p in request.references]
    if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(refs):
        params["target"] = str(refs[t])
    elif isinstance(t, str) and any(Path(t).name == r.name for r in refs):
        params["target"] = str(next(r for r in refs if Path(t).name == r.name))
    else:
        raise InvalidRequest("params.target must name one of the request's references (by index or file name): "
                             "only references are bound by the token and screened")
    return params


def _tokens(keyring: Any, tokens: list[str]) -> list[Any]:
    from consent import parse_token

    return [parse_token(t, keyring) for t in tokens]


def provenance_verify(home: Home, path: Path) -> dict[str, Any]:
    from ._provenance import verify_output

    report = verify_output(path, authority=authority_for(home))
    return {"file": path.name, "state": report.state, "trusted": report.trusted, "binding": report.binding,
            "generator": report.generator, "actions": list(report.actions),
            "digital_source_type": report.digital_source_type, "signer": report.signer,
            "claim": dict(report.claim)}

