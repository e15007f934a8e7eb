"""`cameo demo`: the main job end to end on a fresh machine, offline, in a throw-away home.

Media come from installed packages, nothing is downloaded: scikit-image's ``astronaut.png``
(NASA's portrait of Eileen Collins, public domain) is alice's face, insightface's
``Tom_Hanks_54745.png`` is carol's. Enrollment photos are the picture and its mirror image (a
demonstration, not a recommended enrollment). No speech recording ships in any installed package,
so the demo cameos are face-only; voices go through the same code when clips are given.

Each step prints what it did; the function returns a summary dict (``--json``). The work folder
(a fresh temporary one, or a ``workdir`` that did not exist yet) is removed at the end, whatever
happened, unless ``keep``; a ``workdir`` that already existed is never removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def run_demo(workdir: Path | None = None, *, keep: bool = False,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="cameo-demo-"))
    ours = workdir is None or not work.exists()  # only what the demo created is removed
    work.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work / 'home' / 'cameo.db'}"
    try:
        result = _run(work, db_url, say)
    finally:
        _forget_engine(db_url)
        if ours and not keep:
            shutil.rmtree(work, ignore_errors=True)
    if ours and not keep:
        say(f"removed {work} (run with --keep to look at the registry afterwards)")
        result["removed"] = True
    else:
        say(f"the demo registry is in {work / 'home'}")
        result["removed"] = False
    return result


def _forget_engine(db_url: str) -> None:
    """Close the demo database's pooled connections: its file is about to go."""
    from cameo.registry import _app  # (the registry's command functions)
    eng = _app._ENGINES.pop(db_url, None)
    if eng is not None:
        eng.dispose()


def _run(work: Path, db_url: str, say: Callable[[str], None]) -> dict[str, Any]:
    from cameo.registry import _app  # (the registry's command functions)
    from cameo import CameoError
    from cameo.registry import Home
    from cameo import GenerationRequest

    from ._app import check, init

    home = Home.resolve(work / "home", db_url)
    os.environ.pop("CAMEO_KEK", None)
    pw = "demo-passphrase"
    steps: list[dict[str, Any]] = []

    def step(name: str, ok: bool, detail: str) -> None:
        steps.append({"step": name, "ok": ok, "detail": detail})
        say(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")

    def now() -> datetime:
        return datetime.now(timezone.utc)

    r = init(home, now=now())
    step("init", True, f"registry {r['registry_id']} in {home.path}")
    for h in ("alice", "bob"):
        a = _app.account_create(home, h, pw, now=now())
        step("account", True, f"{h} has Ed25519 key {a['key_id']}")
    g = _app.grant(home, "alice", "bob", passphrase=pw, modalities=("face", "voice"), purposes=("generate",),
                   generators=("studio-v1",), uses=3, expires="7d", now=now())
    step("grant", True, f"alice signed grant {g['grant_id']} for bob on studio-v1, 3 uses")
    req_path = work / "request.json"
    req_path.write_text(json.dumps({"prompt": "alice waves from a boat", "params": {"seconds": 2}, "references": []}))
    req = GenerationRequest.load(req_path)
    t = _app.token(home, "alice", "bob", passphrase=pw, generator="studio-v1", request=req, purpose="generate",
                   grant_id=None, ttl=None, now=now())
    step("token", True, f"bob proved his key and got token {t['token_id']} (expires {t['expires']})")
    c = check(home, [t["token"]], generator="studio-v1", request=req, now=now())
    step("check", c["allowed"], "the gate allows the token for this request")
    other = GenerationRequest.build("alice says something she never said", {"seconds": 2})
    c2 = check(home, [t["token"]], generator="studio-v1", request=other, now=now())
    step("check other request", not c2["allowed"], "denied: " + ", ".join(x["code"] for x in c2["reasons"]))
    _app.revoke(home, "alice", passphrase=pw, grant_id=g["grant_id"], everything=False, now=now())
    c3 = check(home, [t["token"]], generator="studio-v1", request=req, now=now())
    step("revoke", not c3["allowed"], "after revocation: " + ", ".join(x["code"] for x in c3["reasons"]))
    u = _app.usage(home, "alice")
    step("usage", u["count"] > 0, f"alice sees {u['count']} entries about her likeness, {u['denied']} denied")
    rep = _app.audit_verify(home)
    step("audit verify", rep.ok, f"hash chain intact over {rep.entries} entries")
    try:
        _app.account_create(home, "alice", pw, now=now())
        step("duplicate refused", False, "a second alice was created")
    except CameoError as e:
        step("duplicate refused", True, str(e))
    _likeness_flow(home, work, pw, step, now)
    ok = all(s["ok"] for s in steps)
    return {"ok": ok, "workdir": str(work), "steps": steps}


def _package_faces(work: Path) -> dict[str, list[Path]]:
    """Two photos each for alice and carol, from images that ship inside installed packages."""
    import insightface
    import skimage
    from PIL import Image, ImageOps

    sources = {
        "alice": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "carol": Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png",
    }
    out: dict[str, list[Path]] = {}
    for who, src in sources.items():
        img = Image.open(src).convert("RGB")
        if img.width < 256:  # insightface's crop is 112 px: upscale so the face is clearly large enough
            img = img.resize((img.width * 3, img.height * 3), Image.Resampling.LANCZOS)
        a, b = work / f"{who}-1.png", work / f"{who}-2.png"
        img.save(a)
        ImageOps.mirror(img).save(b)
        out[who] = [a, b]
    return out


def _likeness_flow(home: Any, work: Path, pw: str, step: Callable[[str, bool, str], None],
                   now: Callable[[], datetime]) -> None:
    from cameo.registry import _app  # (the registry's command functions)
    from cameo import enroll, match
    from cameo import CameoError
    from cameo import GenerationRequest

    from ._errors import ConditioningError
    from ._generate import generate, provenance_verify

    faces = _package_faces(work)
    _app.account_create(home, "carol", pw, now=now())
    for who in ("alice", "carol"):
        r = enroll(home, who, passphrase=pw, faces=faces[who], voices=[], video=None, audience="approved",
                   restrictions=["no political content"], purposes=("generate", "remix"), adult=True,
                   expires=None, face_model=None, progress=None, now=now())
        t = r["templates"][0]
        step("enroll", True, f"{who}: {t['modality']} template from {t['samples']} photos ({t['encoder']}), "
                             f"sealed under signed consent {r['consent_id']}")
    m = match(home, faces["carol"][0], face_model=None)
    step("match", m["matches"] == ["carol"], f"carol's photo matches {m['matches']}")
    try:
        _app.account_create(home, "mallory", pw, now=now())
        enroll(home, "mallory", passphrase=pw, faces=faces["alice"], voices=[], video=None, audience="approved",
               restrictions=[], purposes=("generate",), adult=True, expires=None, face_model=None, progress=None,
               now=now())
        step("someone else's face refused", False, "mallory enrolled alice's face")
    except CameoError as e:
        step("someone else's face refused", True, str(e))
    grants = {}
    for who in ("alice", "carol"):
        grants[who] = _app.grant(home, who, "bob", passphrase=pw, modalities=("face",), purposes=("generate",),
                                 generators=("studio-v1",), uses=5, expires="1d", now=now())["grant_id"]
    plain = GenerationRequest.build("a person waves from a boat", {"seconds": 2})

    def tok(who: str, req: GenerationRequest) -> str:
        return _app.token(home, who, "bob", passphrase=pw, generator="studio-v1", request=req, purpose="generate",
                          grant_id=None, ttl=None, now=now())["token"]

    t = tok("alice", plain)
    out = generate(home, plain, [t], generator="studio-v1", out_dir=work / "out1", now=now())
    f = Path(out["outputs"][0]["file"])
    step("generate", True, f"studio-v1 consumed alice's face embedding and wrote {f.name}")
    pv = provenance_verify(home, f)
    step("provenance", pv["trusted"], f"C2PA manifest {pv['state']}: {pv['digital_source_type'].rsplit('/', 1)[-1]}, "
                                      f"cameos {pv['claim']['cameo_ids']}")
    try:
        generate(home, plain, [t], generator="studio-v1", out_dir=work / "out1b", now=now())
        step("single use", False, "a token was used twice")
    except ConditioningError as e:
        step("single use", True, f"the same token again: {e}")
    ref = GenerationRequest.build("put them together", {}, [faces["carol"][0]])
    try:
        generate(home, ref, [tok("alice", ref)], generator="studio-v1", out_dir=work / "out2", now=now())
        step("screening", False, "carol's face went through without her token")
    except ConditioningError as e:
        step("screening", not (work / "out2").exists(), f"carol's face in a reference without her token: {e}")
    both = generate(home, ref, [tok("alice", ref), tok("carol", ref)], generator="studio-v1", out_dir=work / "out3",
                    now=now())
    step("consented reference", bool(both["outputs"]), "with both tokens the call goes through")
    t2 = tok("alice", plain)
    _app.revoke(home, "alice", passphrase=pw, grant_id=grants["alice"], everything=False, now=now())
    try:
        generate(home, plain, [t2], generator="studio-v1", out_dir=work / "out4", now=now())
        step("revocation wins", False, "a token of a revoked grant released conditioning")
    except ConditioningError as e:
        step("revocation wins", True, f"token minted before alice revoked: {e}")
    u = _app.usage(home, "carol")
    step("carol is told", any(e["event"] == "screen:match:denied" for e in u["entries"]),
         f"carol's usage log has {u['count']} entries, {u['denied']} denied (incl. the unconsented reference)")
    rep = _app.audit_verify(home)
    step("audit verify (end)", rep.ok, f"hash chain intact over {rep.entries} entries")
