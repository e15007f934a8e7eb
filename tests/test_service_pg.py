"""Revocation wins across server workers on PostgreSQL: ``cameo serve --workers 4`` over one
database; each trial mints a token, commits a revocation through one connection (a worker) and
then starts a release through a new connection (another worker, whichever accepts it). Every
release that starts after its revocation committed must be denied; the controls (no revocation)
must be allowed, so the test can tell a gate that denies everything from one that is right."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent import Grant, Revocation, SigningKey, TokenRequest, new_id
from consent._httpsig import sign_request
from tests.conftest import DATA, throwaway_pg_database
from tests.service_util import PASS, serving

pytestmark = [pytest.mark.postgres, pytest.mark.data]

TRIALS = int(os.environ.get("CAMEO_RACE_TRIALS", "200"))


def _post(url: str, path: str, body: dict[str, Any], signer: tuple[str, SigningKey] | None = None) -> httpx.Response:
    raw = json.dumps(body).encode()
    h = {"content-type": "application/json", "connection": "close"}
    if signer:
        h.update(sign_request(signer[1], keyid=signer[0], method="POST", path=path, query="", body=raw,
                              created=int(time.time())))
    with httpx.Client(base_url=url, timeout=120) as c:  # a new connection: any worker may take it
        return c.post(path, content=raw, headers=h)


def _doc(d: Any) -> dict[str, str]:
    return {"document": base64.b64encode(d.to_bytes()).decode()}


def test_revocation_through_one_worker_denies_a_release_on_another(tmp_path: Path) -> None:
    from cameo import GenerationRequest
    from cameo.client._party import _request_body
    from cameo.registry import Home

    faces = sorted((DATA / "faces").glob("[!_]*/"))
    voices = sorted(d for d in (DATA / "voices").glob("[!_]*/") if not d.name.startswith("synth"))
    if not faces or not voices:
        pytest.skip(f"test media not found at {DATA}")
    face = sorted(max(faces, key=lambda d: len(list(d.iterdir()))).iterdir())
    voice = sorted(voices[0].iterdir())
    with throwaway_pg_database() as url, serving(tmp_path, workers=4, db=url) as srv:
        assert len(srv.workers_seen(60)) >= 3, "four workers answer"
        srv.at("owner", "account", "create", "alice")
        srv.at("grantee", "account", "create", "bob")
        srv.at("gen", "generator", "keygen", "gen-r")
        srv.host("generator", "add", "gen-r", "--adapter", "sealed", "--public-key", str(srv.homes["gen"] / "gen-r.pub"))
        srv.at("owner", "enroll", "alice", "--face", str(face[0]), "--face", str(face[1]),
               "--voice", str(voice[0]), "--voice", str(voice[1]))
        alice = Home.resolve(srv.homes["owner"]).load_key("alice", PASS)
        bob = Home.resolve(srv.homes["grantee"]).load_key("bob", PASS)
        gen = SigningKey.from_pem(json.loads((srv.homes["gen"] / "generators" / "gen-r.key").read_text())["ed25519"]
                                  .encode())
        req_path = srv.homes["gen"] / "req.json"
        req_path.write_text(json.dumps({"prompt": "a wave", "params": {}, "references": []}))
        req = GenerationRequest.load(req_path)
        release_body = _request_body(req)
        violations, allowed_controls, controls = [], 0, 0
        for i in range(TRIALS):
            now = datetime.now(timezone.utc)
            g = Grant.create(alice, id=new_id("grant"), owner="alice", owner_key=alice.key_id, grantee="bob",
                             grantee_key=bob.key_id, modalities=("face", "voice"), purposes=("generate",),
                             generators=("gen-r",), created=now, not_after=now + timedelta(hours=1), max_uses=2)
            assert _post(srv.url, "/v1/grants", _doc(g)).status_code == 201
            tr = TokenRequest.create(bob, id=new_id("treq"), grantee="bob", grantee_key=bob.key_id, owner="alice",
                                     grant_id=g.id, generator="gen-r", purpose="generate",
                                     request_digest=req.digest, created=now)
            minted = _post(srv.url, "/v1/tokens", _doc(tr))
            assert minted.status_code == 201, minted.text
            token = minted.json()["token"]
            control = i % 10 == 9
            if control:
                controls += 1
            else:
                rv = Revocation.create(alice, id=new_id("rev"), owner="alice", owner_key=alice.key_id, scope="grant",
                                       target=g.id, created=datetime.now(timezone.utc))
                assert _post(srv.url, "/v1/revocations", _doc(rv)).status_code == 201  # committed
            r = _post(srv.url, "/v1/releases", {"request": release_body, "tokens": [token]}, ("generator:gen-r", gen))
            if control:
                allowed_controls += r.status_code == 201
            elif r.status_code != 403:
                violations.append((i, r.status_code, r.text[:200]))
        assert not violations, f"{len(violations)} releases after a committed revocation were not denied: {violations[:3]}"
        assert allowed_controls == controls, "an unrevoked grant must release (else this test proves nothing)"
