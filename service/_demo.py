"""`cameo demo`: the story across separate parties, through a real server on this machine.

Five homes in a throw-away folder, each holding only its own keys: the registry operator's, alice's
and carol's (owners), bob's (a grantee) and a generator host's. The demo starts ``cameo serve`` on a
free loopback port (two workers), and every party talks to it over HTTP with its own signed
requests, as they would from separate machines. Media come from installed packages (nothing is
downloaded): scikit-image's astronaut portrait is alice, insightface's sample face is carol, each
photo with its mirror image. The server is stopped and the folder removed at the end, whatever
happened, unless ``keep``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PASSPHRASE = "demo-passphrase"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem_keys(path: Path) -> int:
    return sum(len(re.findall(rb"BEGIN [A-Z ]*PRIVATE KEY", f.read_bytes())) for f in path.rglob("*") if f.is_file())


def run_service_demo(workdir: Path | None = None, *, keep: bool = False,
                     say: Callable[[str], None] = print) -> dict[str, Any]:
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="cameo-demo-"))
    ours = workdir is None or not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    server: subprocess.Popen[bytes] | None = None
    saved = {k: os.environ.get(k) for k in ("CAMEO_SERVER", "CAMEO_HOME", "CAMEO_DATABASE_URL", "CAMEO_KEK")}
    steps: list[dict[str, Any]] = []

    def step(who: str, name: str, ok: bool, detail: str) -> None:
        steps.append({"party": who, "step": name, "ok": ok, "detail": detail})
        say(f"[{'ok' if ok else 'FAIL'}] {who:>9} | {name}: {detail}")

    try:
        for k in saved:
            os.environ.pop(k, None)
        homes = {p: work / p for p in ("registry", "alice", "bob", "carol", "generator")}
        for h in homes.values():
            h.mkdir(mode=0o700, exist_ok=True)
        server, url = _start(homes["registry"], work / "serve.log", step)
        _story(homes, url, work, step)
    finally:
        if server is not None:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(server.pid, signal.SIGKILL)
            say(f"[ok]  registry | stopped the server (log: {'kept' if keep else 'removed'})")
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v
        if ours and not keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = bool(steps) and all(s["ok"] for s in steps)
    if ours and not keep:
        say(f"removed {work} (run with --keep to look at the five homes afterwards)")
    else:
        say(f"the demo's homes are in {work}")
    return {"ok": ok, "workdir": str(work), "removed": ours and not keep, "steps": steps}


def _start(registry: Path, log: Path, step: Callable[[str, str, bool, str], None]) -> tuple[Any, str]:
    import httpx

    from cameo.registry import Home
    from conditioning._app import init

    r = init(Home.resolve(registry), now=datetime.now(timezone.utc))
    step("registry", "init", True, f"registry {r['registry_id']}: vault, token, binding, log and C2PA keys made "
                                   f"here, before serving ({_pem_keys(registry)} private keys, none a party's)")
    port = _free_port()
    env = {**os.environ, "CAMEO_HOME": str(registry), "CAMEO_SERVER": ""}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "2"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            step("registry", "serve", False, f"the server did not start: {log.read_text()[-300:]}")
            raise RuntimeError("cameo serve did not start")
        time.sleep(0.3)
    step("registry", "serve", True, f"cameo serve on {url} with 2 workers (OpenAPI at {url}/openapi.json)")
    return proc, url


def _story(homes: dict[str, Path], url: str, work: Path, step: Callable[[str, str, bool, str], None]) -> None:
    from cameo import CameoError, GenerationRequest
    from cameo.client import Party
    from cameo.registry import Home
    from conditioning._app import generator_add
    from conditioning._demo import _package_faces
    from consent import NoteVerifier, leaf_hash, open_checkpoint, verify_inclusion

    def now() -> datetime:
        return datetime.now(timezone.utc)

    party = {who: Party(Home.resolve(homes[who]), url) for who in ("alice", "bob", "carol", "generator")}
    pw = PASSPHRASE
    try:
        for who in ("alice", "bob", "carol"):
            a = party[who].account_create(who, pw, now=now())
            step(who, "account", True, f"Ed25519 key {a['key_id']} made and kept here; only its public half sent")
        faces = _package_faces(work)
        for who in ("alice", "carol"):
            r = party[who].enroll(who, passphrase=pw, faces=faces[who], voices=[], video=None, audience="approved",
                                  restrictions=["no political content"], purposes=("generate", "remix"), adult=True,
                                  expires=None, progress=None, now=now())
            step(who, "enroll", True, f"photos uploaded, templates computed by the registry, consent {r['consent_id']} "
                                      "signed here, sealed there")
        k = party["generator"].generator_keygen("gen-remote", out_dir=homes["generator"])
        step("generator", "keygen", True, f"request and sealing keys kept on the generator host; {Path(k['path']).name} "
                                          "handed to the operator")
        generator_add(Home.resolve(homes["registry"]), "gen-remote", adapter="sealed", config=None,
                      public_key=Path(k["path"]), now=now())
        step("registry", "generator add", True, "the operator registered gen-remote's public keys")
        g = party["alice"].grant("alice", "bob", passphrase=pw, modalities=("face",), purposes=("generate",),
                                 generators=("gen-remote",), uses=5, expires="1d", now=now())
        step("alice", "grant", True, f"signed grant {g['grant_id']} for bob on gen-remote, 5 uses")
        party["carol"].grant("carol", "bob", passphrase=pw, modalities=("face",), purposes=("generate",),
                             generators=("gen-remote",), uses=5, expires="1d", now=now())
        req_file = work / "request.json"
        req_file.write_text(json.dumps({"prompt": "a person waves from a boat", "params": {"seconds": 2},
                                        "references": []}))
        plain = GenerationRequest.load(req_file)

        def tok(owner: str, req: Any) -> str:
            return party["bob"].token(owner, "bob", passphrase=pw, generator="gen-remote", request=req,
                                      purpose="generate", grant_id=None, ttl=None, now=now())["token"]

        t = tok("alice", plain)
        step("bob", "token", True, "signed a token request with his key; the registry minted a single-use token")
        out = party["generator"].generate(plain, [t], generator="gen-remote", out_dir=work / "out1", now=now())
        f = Path(out["outputs"][0]["file"])
        step("generator", "generate", True, f"bundle sealed to this host's key, opened here, model run here; "
                                            f"{f.name} screened and signed by the registry")
        pv = Party(Home.resolve(work / "anyone"), url).provenance_verify(f)
        step("anyone", "provenance", bool(pv["trusted"]), f"C2PA manifest {pv['state']} against the pinned trust "
                                                          f"root; cameos {pv['cameos']}")
        try:
            party["generator"].generate(plain, [t], generator="gen-remote", out_dir=work / "out1b", now=now())
            step("generator", "single use", False, "a token was used twice")
        except CameoError as e:
            step("generator", "single use", True, f"the same token again: {e}")
        shutil.copy(faces["carol"][0], work / "carol.png")
        ref_file = work / "ref.json"
        ref_file.write_text(json.dumps({"prompt": "two friends", "params": {}, "references": ["carol.png"]}))
        ref = GenerationRequest.load(ref_file)
        try:
            party["generator"].generate(ref, [tok("alice", ref)], generator="gen-remote", out_dir=work / "out2",
                                        now=now())
            step("generator", "screening", False, "carol's face went through without her token")
        except CameoError as e:
            step("generator", "screening", not (work / "out2").exists(), f"carol's face without her token: {e}")
        both = party["generator"].generate(ref, [tok("alice", ref), tok("carol", ref)], generator="gen-remote",
                                           out_dir=work / "out3", now=now())
        step("generator", "consented", bool(both["outputs"]), "with both owners' tokens the call goes through")
        t2 = tok("alice", plain)
        party["alice"].revoke("alice", passphrase=pw, grant_id=g["grant_id"], everything=False, now=now())
        step("alice", "revoke", True, "signed a revocation of bob's grant")
        try:
            party["generator"].generate(plain, [t2], generator="gen-remote", out_dir=work / "out4", now=now())
            step("generator", "revocation wins", False, "a token of a revoked grant released conditioning")
        except CameoError as e:
            step("generator", "revocation wins", True, f"a token minted before the revocation: {e}")
        time.sleep(1.2)  # the server's integrator signs a checkpoint within its bound
        u = party["alice"].usage("alice", passphrase=pw, proofs=True)
        step("alice", "usage", u["count"] > 0, f"{u['count']} entries about her likeness, {u['denied']} denied")
        cp = party["bob"].audit_checkpoint()
        verifier = NoteVerifier.parse(cp["log_key"])
        proved = 0
        if u.get("checkpoint"):
            import base64

            c = open_checkpoint(u["checkpoint"]["note"], [verifier])  # signed by the log key, or it raises
            for e in u["entries"]:
                p = e.get("proof")
                if isinstance(p, dict) and int(p["tree_size"]) == c.size:
                    verify_inclusion(leaf_hash(base64.b64decode(p["entry_bytes"])), int(p["leaf_index"]), c.size,
                                     [bytes.fromhex(h) for h in p["hashes"]], c.root)
                    proved += 1
        step("alice", "proofs", proved > 0, f"{proved} of her uses proved included in a checkpoint signed by the "
                                            f"log key, checked here with only that key")
        d = party["carol"].delete("carol", passphrase=pw)
        step("carol", "delete", True, f"her data key destroyed, {d.get('templates_destroyed', 0)} template(s) gone")
        n = _pem_keys(homes["registry"])
        step("registry", "holds no party key", all(not list(homes["registry"].rglob(f"*{w}*"))
                                                   for w in ("alice", "bob", "carol")),
             f"{n} private keys on the registry host, all its own")
    finally:
        for p in party.values():
            p.close()
