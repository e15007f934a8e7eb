"""`cameo demo`: the main job end to end on a fresh machine, offline, in a throw-away home.

Each step prints what it did; the function returns a summary dict (``--json``). Steps that need
enrollment and generation run when those parts are installed with their models (they ship inside
the installed packages; nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def run_demo(workdir: Path | None = None, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    from cameo import _app
    from cameo._errors import CameoError
    from cameo._home import Home
    from cameo._request import GenerationRequest

    from ._app import check

    work = Path(workdir or tempfile.mkdtemp(prefix="cameo-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    home = Home.resolve(work / "home", f"sqlite:///{work / 'home' / 'cameo.db'}")
    os.environ.pop("CAMEO_KEK", None)
    pw = "demo-passphrase"
    steps: list[dict[str, Any]] = []

    def step(name: str, ok: bool, detail: str) -> None:
        steps.append({"step": name, "ok": ok, "detail": detail})
        say(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")

    def now() -> datetime:
        return datetime.now(timezone.utc)

    r = _app.init(home, now=now())
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
    ok = all(s["ok"] for s in steps)
    return {"ok": ok, "workdir": str(work), "steps": steps}
