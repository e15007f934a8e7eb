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
 5. each output gets a C2PA manifest (or a signed sidecar) naming the cameos, consent digests,
    grants and tokens; only then is it moved into ``--out``; the owners' logs get the output digest.
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

from cameo._app import engine_for
from cameo._audit import append as audit_append
from cameo._db import transaction
from cameo._home import Home
from cameo._likeness import Encoders
from cameo._registry import get_account, get_generator
from cameo._request import GenerationRequest, StagedReference, file_digest

from ._errors import ScreeningDenied
from ._gate import Gate, notify
from ._screen import Screener


def authority_for(home: Home) -> Any:
    from ._provenance import ProvenanceAuthority

    return ProvenanceAuthority.load(home.provenance_dir)


def generate(home: Home, request: GenerationRequest, tokens: list[str], *, generator: str, out_dir: Path,
             now: datetime, face_model: Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from cameo._errors import InvalidRequest, MediaError

    from ._adapters import get_adapter, validate_request

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
            screener.prepare(refs)
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
            claim = {"cameo_ids": [c.cameo_id for c in bundle.cameos],
                     "consent_digests": [c.consent_digest for c in bundle.cameos],
                     "grant_ids": [c.grant_id for c in bundle.cameos],
                     "token_ids": [c.token_id for c in bundle.cameos],
                     "restrictions": sorted({r for c in bundle.cameos for r in c.restrictions}),
                     "generator_id": generator, "request_digest": request.digest}
        staged = work.resolve()
        # only the declared outputs the generator wrote into its folder are screened, signed and
        # handed over; anything else it left there (or a path elsewhere) is discarded
        files = [f for f in files if f.resolve().is_relative_to(staged) and f.resolve() != staged]
        toks = _tokens(keyring, tokens)
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
        outputs = []
        say("signing provenance")
        for f in files:  # 5
            from ._provenance import sign_output

            sign_output(f, claim=claim, authority=authority, generator=generator)
        from ._provenance import detached_path, sidecar_path

        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(files):
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
    removed = []
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
    from cameo._errors import InvalidRequest

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

