"""The registry as an HTTP service: a real ``cameo serve`` (uvicorn, several worker processes) on a
free loopback port, parties in their own homes, a real HTTP client. Authentication (signed,
unsigned, replayed, stale, wrong party), problem details on every error path, remote releases,
revocation across workers, screening across workers, limits, logs, transport rules."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent import SigningKey
from consent._httpsig import sign_request
from tests.conftest import DATA
from tests.service_util import PASS, Server, cameo, serving


def _key(home: Path, handle: str) -> SigningKey:
    from cameo.registry import Home

    return Home.resolve(home).load_key(handle, PASS)


def _gen_key(home: Path, gen: str) -> SigningKey:
    doc = json.loads((home / "generators" / f"{gen}.key").read_text())
    return SigningKey.from_pem(doc["ed25519"].encode())


def signed(url: str, method: str, path: str, body: Any, keyid: str, key: SigningKey, *,
           created: int | None = None, nonce: str | None = None, raw: bytes | None = None,
           headers: dict[str, str] | None = None) -> httpx.Response:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    h = headers or sign_request(key, keyid=keyid, method=method, path=path, query="", body=data,
                                created=created or int(time.time()), nonce=nonce)
    h = {**h, "content-type": "application/json"}
    return httpx.request(method, url + path, content=data if (body is not None or raw is not None) else None,
                         headers=h, timeout=60)


def is_problem(r: httpx.Response) -> bool:
    return r.headers.get("content-type", "").startswith("application/problem+json") and \
        isinstance(r.json().get("status"), int) and r.json()["status"] == r.status_code and "detail" in r.json()


def _counts(srv: Server) -> dict[str, int]:
    con = sqlite3.connect(srv.home / "cameo.db")
    try:
        names = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {n: con.execute(f'select count(*) from "{n}"').fetchone()[0] for n in names
                if n not in ("http_nonces",)}
    finally:
        con.close()


def _faces(n: int = 3) -> list[list[Path]]:
    if not (DATA / "faces").is_dir():
        pytest.skip(f"test media not found at {DATA} (set CAMEO_TEST_DATA)")
    people = sorted((d for d in (DATA / "faces").iterdir() if d.is_dir() and not d.name.startswith("_")),
                    key=lambda d: (-len(list(d.iterdir())), d.name))
    return [sorted(p.iterdir()) for p in people[:n]]


def _voices(n: int = 3) -> list[list[Path]]:
    people = sorted((d for d in (DATA / "voices").iterdir() if d.is_dir() and not d.name.startswith(("_", "synth"))),
                    key=lambda d: (-len(list(d.iterdir())), d.name))
    return [sorted(p.iterdir()) for p in people[:n]]


def _setup(srv: Server, *, enroll: bool) -> None:
    srv.at("owner", "account", "create", "alice")
    srv.at("grantee", "account", "create", "bob")
    srv.at("carolh", "account", "create", "carol")
    for gen, who in (("gen-r", "gen"), ("gen-b", "genb")):
        srv.at(who, "generator", "keygen", gen)
        srv.host("generator", "add", gen, "--adapter", "sealed", "--public-key", str(srv.homes[who] / f"{gen}.pub"))
    if enroll:
        faces, voices = _faces(), _voices()
        srv.at("owner", "enroll", "alice", "--face", str(faces[0][0]), "--face", str(faces[0][1]),
               "--voice", str(voices[0][0]), "--voice", str(voices[0][1]))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("svc")
    with serving(root, workers=2) as s:
        s.keys0 = _pem_count(s.home)  # type: ignore[attr-defined]
        _setup(s, enroll=(DATA / "faces").is_dir())
        yield s


def _pem_count(path: Path) -> int:
    n = 0
    for f in path.rglob("*"):
        if f.is_file():
            n += len(re.findall(rb"BEGIN [A-Z ]*PRIVATE KEY", f.read_bytes()))
    return n


# -- the API document, health ------------------------------------------------------------------
def test_health_and_openapi(srv: Server) -> None:
    assert httpx.get(srv.url + "/healthz").json()["ok"] is True
    doc = httpx.get(srv.url + "/openapi.json").json()
    assert "/v1/grants" in doc["paths"] and "/v1/releases" in doc["paths"]


def test_two_workers_serve(srv: Server) -> None:
    assert len(srv.workers_seen()) >= 2, "cameo serve --workers 2 runs two processes that both answer"


# -- every write refuses what is not signed by its party; errors are problem details -----------
def _writes(srv: Server) -> list[tuple[str, str]]:
    doc = httpx.get(srv.url + "/openapi.json").json()
    return [(m.upper(), re.sub(r"\{[^}]+\}", "alice", p)) for p, ops in doc["paths"].items()
            for m in ops if m in ("post", "put", "patch", "delete")]


def test_unsigned_or_malformed_writes_change_nothing(srv: Server) -> None:
    before = _counts(srv)
    writes = _writes(srv)
    assert len(writes) >= 10
    for method, path in writes:
        for body in (b"{}", b'{"a": [1, 2', b"", b"\xff\xfe"):
            r = httpx.request(method, srv.url + path, content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (method, path, body, r.status_code)
            assert is_problem(r), (method, path, r.text[:200])
    assert _counts(srv) == before


def test_unknown_route_and_method_are_problems(srv: Server) -> None:
    for r in (httpx.get(srv.url + "/v1/nothing"), httpx.put(srv.url + "/v1/grants", content=b"{}")):
        assert r.status_code in (404, 405) and is_problem(r)


def test_huge_body_refused_before_it_is_read(srv: Server) -> None:
    r = httpx.post(srv.url + "/v1/grants", content=b"a" * (49 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and is_problem(r)
    assert httpx.get(srv.url + "/healthz").status_code == 200


# -- signatures --------------------------------------------------------------------------------------
def test_owner_reads_are_signed_by_the_owner(srv: Server) -> None:
    alice = _key(srv.homes["owner"], "alice")
    bob = _key(srv.homes["grantee"], "bob")
    path = "/v1/cameos/alice/grants"
    ok = signed(srv.url, "GET", path, None, "account:alice", alice)
    assert ok.status_code == 200 and ok.json()["owner"] == "alice"
    r = httpx.get(srv.url + path)
    assert r.status_code == 401 and is_problem(r) and r.json()["code"] == "unsigned"
    r = signed(srv.url, "GET", path, None, "account:bob", bob)
    assert r.status_code == 403 and is_problem(r) and r.json()["code"] == "wrong-party"
    r = signed(srv.url, "GET", path, None, "account:alice", bob)  # alice's name, bob's key
    assert r.status_code == 401 and r.json()["code"] == "bad-signature"
    r = signed(srv.url, "GET", path, None, "account:zed", bob)
    assert r.status_code == 401 and r.json()["code"] == "unknown-signer"
    r = signed(srv.url, "GET", path, None, "account:alice", alice, created=int(time.time()) - 3600)
    assert r.status_code == 401 and r.json()["code"] == "stale-signature"
    r = signed(srv.url, "GET", "/v1/cameos/alice/usage", None, "account:alice", alice)
    assert r.status_code == 200


def test_replayed_request_is_refused_through_any_worker(srv: Server) -> None:
    alice = _key(srv.homes["owner"], "alice")
    path = "/v1/cameos/alice/grants"
    h = sign_request(alice, keyid="account:alice", method="GET", path=path, query="", body=b"",
                     created=int(time.time()))
    first = signed(srv.url, "GET", path, None, "", alice, headers=h)
    assert first.status_code == 200
    for _ in range(6):  # new connections: other workers too
        again = signed(srv.url, "GET", path, None, "", alice, headers=h)
        assert again.status_code == 401 and again.json()["code"] == "replayed"


def test_tampered_body_is_refused(srv: Server) -> None:
    alice = _key(srv.homes["owner"], "alice")
    path = "/v1/cameos/alice/match"
    h = sign_request(alice, keyid="account:alice", method="POST", path=path, query="",
                     body=b'{"file": {"name": "a.png", "data": ""}}', created=int(time.time()))
    r = signed(srv.url, "POST", path, None, "", alice, headers=h, raw=b'{"file": {"name": "b.png", "data": ""}}')
    assert r.status_code == 401 and r.json()["code"] == "bad-signature"


def test_signature_on_another_path_does_not_verify(srv: Server) -> None:
    alice = _key(srv.homes["owner"], "alice")
    h = sign_request(alice, keyid="account:alice", method="GET", path="/v1/cameos/alice", query="", body=b"",
                     created=int(time.time()))
    r = signed(srv.url, "GET", "/v1/cameos/alice/usage", None, "", alice, headers=h)
    assert r.status_code == 401


def test_account_creation_needs_proof_of_possession(srv: Server) -> None:
    k, other = SigningKey.generate(), SigningKey.generate()
    body = {"handle": "mallory", "public_key": k.public.b64()}
    r = signed(srv.url, "POST", "/v1/accounts", body, "account:mallory", other)
    assert r.status_code == 401
    r = signed(srv.url, "POST", "/v1/accounts", body, "account:eve", k)
    assert r.status_code == 403
    r = signed(srv.url, "POST", "/v1/accounts", body, "account:mallory", k)
    assert r.status_code == 201 and r.json()["key_id"] == k.key_id
    r = signed(srv.url, "POST", "/v1/accounts", body, "account:mallory", k)
    assert r.status_code == 400 and r.json()["error_type"] == "DuplicateHandle"


# -- the story across homes ------------------------------------------------------------------------
def _request_file(folder: Path, refs: list[Path] = ()) -> Path:  # type: ignore[assignment]
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for r in refs:
        shutil.copy(r, folder / r.name)
        names.append(r.name)
    p = folder / f"req-{time.monotonic_ns()}.json"
    p.write_text(json.dumps({"prompt": "a person waves", "params": {"seconds": 1}, "references": names}))
    return p


def _token(srv: Server, req: Path, gen: str = "gen-r") -> str:
    r = srv.at("grantee", "token", "alice", "--as", "bob", "--generator", gen, "--request", str(req), "--json")
    return json.loads(r.stdout)["token"]


@pytest.mark.data
def test_remote_release_sealed_to_the_generator_single_use(srv: Server) -> None:
    _faces()
    srv.at("owner", "grant", "alice", "--to", "bob", "--generator", "gen-r,gen-b", "--uses", "10")
    req = _request_file(srv.homes["gen"] / "reqs")
    t = _token(srv, req)
    out = srv.homes["gen"] / "out1"
    r = srv.at("gen", "generate", "--request", str(req), "--token", t, "--generator", "gen-r", "--out", str(out),
               "--json")
    doc = json.loads(r.stdout)
    files = [Path(o["file"]) for o in doc["outputs"]]
    assert files and all(f.is_file() for f in files)
    v = srv.at("gen", "provenance", "verify", str(files[0]), "--json")
    assert json.loads(v.stdout)["trusted"] is True and json.loads(v.stdout)["generator"] == "gen-r"
    entries = json.loads(v.stdout)["claim"]["log_entry_ids"]  # the release's audit entries, provable
    assert entries and all(re.fullmatch(r"ent_[0-9a-f]{32}", e) for e in entries)
    again = srv.at("gen", "generate", "--request", str(req), "--token", t, "--generator", "gen-r", "--out",
                   str(srv.homes["gen"] / "out2"), check=False)
    assert again.returncode == 3 and not (srv.homes["gen"] / "out2").exists()
    # a token for gen-r, presented in a release signed by gen-b: refused (audience), nothing consumed
    t2 = _token(srv, req)
    r = srv.at("genb", "generate", "--request", str(req), "--token", t2, "--generator", "gen-b", "--out",
               str(srv.homes["genb"] / "o"), "--json", check=False)
    assert r.returncode == 3
    ok = srv.at("gen", "generate", "--request", str(req), "--token", t2, "--generator", "gen-r", "--out",
                str(srv.homes["gen"] / "out3"))
    assert ok.returncode == 0


@pytest.mark.data
def test_release_signed_by_an_account_or_unknown_generator_refused(srv: Server) -> None:
    _faces()
    alice = _key(srv.homes["owner"], "alice")
    body = {"request": {"prompt": "x", "params": {}, "references": []}, "tokens": ["v4.public.x"]}
    r = signed(srv.url, "POST", "/v1/releases", body, "account:alice", alice)
    assert r.status_code == 403 and is_problem(r)
    r = signed(srv.url, "POST", "/v1/releases", body, "generator:nope", SigningKey.generate())
    assert r.status_code == 401 and is_problem(r)
    gen = _gen_key(srv.homes["gen"], "gen-r")
    r = signed(srv.url, "POST", "/v1/releases", body, "generator:gen-r", gen)
    assert r.status_code == 403 and is_problem(r) and r.json()["reasons"]


@pytest.mark.data
def test_outputs_of_a_release_only_once_and_only_by_its_generator(srv: Server) -> None:
    from cameo.client import Party
    from cameo.registry import Home

    _faces()
    srv.at("owner", "grant", "alice", "--to", "bob", "--generator", "gen-r", "--uses", "3")
    req = _request_file(srv.homes["gen"] / "reqs2")
    t = _token(srv, req)
    from cameo import GenerationRequest
    from cameo.client._party import _request_body

    p = Party(Home.resolve(srv.homes["gen"]), srv.url)
    gen = _gen_key(srv.homes["gen"], "gen-r")
    rel = signed(srv.url, "POST", "/v1/releases", {"request": _request_body(GenerationRequest.load(req)),
                                                   "tokens": [t]}, "generator:gen-r", gen)
    assert rel.status_code == 201, rel.text
    rid = rel.json()["release_id"]
    png = base64.b64encode((DATA / "faces").joinpath("_noface").iterdir().__next__().read_bytes()).decode()
    body = {"outputs": [{"name": "x.png", "data": png}]}
    other = signed(srv.url, "POST", f"/v1/releases/{rid}/outputs", body, "generator:gen-b",
                   _gen_key(srv.homes["genb"], "gen-b"))
    assert other.status_code == 403 and is_problem(other)
    first = signed(srv.url, "POST", f"/v1/releases/{rid}/outputs", body, "generator:gen-r", gen)
    assert first.status_code == 201, first.text
    second = signed(srv.url, "POST", f"/v1/releases/{rid}/outputs", body, "generator:gen-r", gen)
    assert second.status_code == 403 and "already used" in second.json()["detail"]
    p.close()


@pytest.mark.data
def test_enrollment_and_deletion_seen_by_screening_on_every_worker(srv: Server) -> None:
    faces, voices = _faces(), _voices()
    assert len(srv.workers_seen()) >= 2
    srv.at("owner", "grant", "alice", "--to", "bob", "--generator", "gen-r", "--uses", "40")
    srv.at("carolh", "enroll", "carol", "--face", str(faces[1][0]), "--face", str(faces[1][1]),
           "--voice", str(voices[1][0]), "--voice", str(voices[1][1]))
    req = _request_file(srv.homes["gen"] / "reqs3", [faces[1][-1]])
    for i in range(4):
        r = srv.at("gen", "generate", "--request", str(req), "--token", _token(srv, req), "--generator", "gen-r",
                   "--out", str(srv.homes["gen"] / f"c{i}"), check=False)
        assert r.returncode == 3 and not (srv.homes["gen"] / f"c{i}").exists(), r.stdout + r.stderr
    srv.at("carolh", "delete", "carol")
    for i in range(4):
        r = srv.at("gen", "generate", "--request", str(req), "--token", _token(srv, req), "--generator", "gen-r",
                   "--out", str(srv.homes["gen"] / f"d{i}"), check=False)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.data
def test_match_is_for_the_owner_against_their_own_cameo(srv: Server) -> None:
    faces = _faces()
    mine = srv.at("owner", "match", str(faces[0][-1]), "--owner", "alice", "--json")
    assert json.loads(mine.stdout)["matched"] is True
    r = srv.at("owner", "match", str(faces[0][-1]), "--json", check=False)
    assert r.returncode == 2
    bob = _key(srv.homes["grantee"], "bob")
    data = base64.b64encode(faces[0][-1].read_bytes()).decode()
    r = signed(srv.url, "POST", "/v1/cameos/alice/match", {"file": {"name": "a.jpg", "data": data}},
               "account:bob", bob)
    assert r.status_code == 403


def test_registry_makes_and_holds_no_party_key(srv: Server) -> None:
    assert _pem_count(srv.home) == srv.keys0  # type: ignore[attr-defined]
    names = [p.name for p in srv.home.rglob("*")]
    assert not [n for n in names if any(h in n for h in ("alice", "bob", "carol", "gen-r"))]
    for who in ("owner", "grantee", "gen"):
        assert not list(srv.homes[who].rglob("*.db")) and not list(srv.homes[who].rglob("*.sqlite*"))
    assert _pem_count(srv.homes["owner"]) == 1


def test_no_key_token_or_passphrase_in_the_server_log(srv: Server) -> None:
    text = srv.log.read_text(errors="replace")
    assert "POST /v1/grants" in text or "GET /v1" in text  # the log is the server's, and it logged requests
    assert "PRIVATE KEY" not in text and "v4.public." not in text and PASS not in text


# -- limits, transport ------------------------------------------------------------------------------
def test_rate_limit_per_key(tmp_path: Path) -> None:
    with serving(tmp_path, workers=1, env={"CAMEO_SERVE_RATE": "0.2:3"}) as s:
        s.at("owner", "account", "create", "alice")
        k = _key(s.homes["owner"], "alice")
        codes = [signed(s.url, "GET", "/v1/cameos/alice/grants", None, "account:alice", k).status_code
                 for _ in range(5)]
        assert codes[:2] == [200, 200] and codes[-1] == 429
        r = signed(s.url, "GET", "/v1/cameos/alice/grants", None, "account:alice", k)
        assert r.status_code == 429 and is_problem(r) and int(r.headers["retry-after"]) >= 1


def test_serve_refuses_plain_http_on_a_public_address(tmp_path: Path) -> None:
    home = tmp_path / "r"
    home.mkdir()
    cameo("init", home=home)
    r = cameo("serve", "--host", "0.0.0.0", "--port", "8799", home=home, check=False)
    assert r.returncode == 2 and "TLS" in (r.stdout + r.stderr)


def test_client_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    r = cameo("show", "alice", home=tmp_path, server="http://registry.example:8750", check=False)
    assert r.returncode == 2 and "http://" in (r.stdout + r.stderr)
    assert not list(tmp_path.rglob("*.db"))


def test_https_with_a_pinned_ca(tmp_path: Path) -> None:
    import datetime as dt
    import os
    import ssl
    import signal
    import subprocess
    import sys

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.service_util import free_port

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    home = tmp_path / "r"
    home.mkdir()
    cameo("init", home=home)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")],
                            env={**os.environ, "CAMEO_HOME": str(home), "CAMEO_SERVER": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            try:
                r = httpx.get(f"https://localhost:{port}/healthz", timeout=2,
                              verify=ssl.create_default_context(cafile=str(tmp_path / "c.pem")))
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://localhost:{port}/healthz", timeout=5)  # not trusted without the CA
        party = tmp_path / "p"
        party.mkdir()
        out = cameo("account", "create", "alice", home=party, server=f"https://localhost:{port}",
                    env={"CAMEO_SERVER_CA": str(tmp_path / "c.pem")})
        assert "alice" in out.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_media_longer_than_the_limit_is_refused_before_any_model(srv: Server, tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    wav = tmp_path / "long.wav"
    soundfile.write(str(wav), np.zeros(16_000 * 130, dtype="int16"), 16_000)
    alice = _key(srv.homes["owner"], "alice")
    body = {"faces": [], "voices": [{"name": "long.wav", "data": base64.b64encode(wav.read_bytes()).decode()}]}
    before = _counts(srv)
    r = signed(srv.url, "POST", "/v1/cameos/alice/enrollments", body, "account:alice", alice)
    assert r.status_code == 413 and is_problem(r) and r.json()["code"] == "media-too-long"
    assert _counts(srv) == before


@pytest.mark.data
def test_follow_and_dry_run_check_through_the_server(srv: Server) -> None:
    _faces()
    r = srv.at("owner", "follow", "alice", "bob", "--json")
    assert json.loads(r.stdout)["followee"] == "bob"
    srv.at("owner", "grant", "alice", "--to", "bob", "--generator", "gen-r", "--uses", "2")
    req = _request_file(srv.homes["gen"] / "reqs4")
    t = _token(srv, req)
    ok = srv.at("gen", "check", "--token", t, "--generator", "gen-r", "--request", str(req), "--json")
    assert json.loads(ok.stdout)["allowed"] is True
    bad = srv.at("genb", "check", "--token", t, "--generator", "gen-b", "--request", str(req), check=False)
    assert bad.returncode == 3  # the token's audience is gen-r


def test_an_enrollment_never_completed_expires_and_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta, timezone

    from cameo import Encoders
    from cameo._enrollment import PENDING_TTL, enroll_begin, enroll_complete
    from cameo._errors import NotFound
    from cameo.registry import Home, engine_for, transaction
    from cameo.registry import _app
    from cameo.registry._service_models import PendingEnrollment
    from conditioning._app import init
    from conditioning._demo import _package_faces
    from consent import ConsentRecord, TemplateCommitment, new_id

    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    home = Home.resolve(tmp_path / "r")
    t0 = datetime.now(timezone.utc)
    init(home, now=t0)
    _app.account_create(home, "alice", PASS, now=t0)
    faces = _package_faces(tmp_path)["alice"]
    enc = Encoders(None)
    p = enroll_begin(home, "alice", faces=faces, voices=[], video=None, encoders=enc, now=t0)
    key = home.load_key("alice", PASS)
    record = ConsentRecord.create(key, id=new_id("consent"), owner="alice", owner_key=key.key_id,
                                  purposes=("generate",), modalities=("face",), audience="approved", restrictions=(),
                                  templates=tuple(TemplateCommitment(t["modality"], t["encoder"], t["digest"],
                                                                     int(t["samples"])) for t in p["templates"]),
                                  adult_attested=True, created=t0, expires=None)
    with pytest.raises(NotFound, match="expired"):
        enroll_complete(home, "alice", p["enrollment_id"], record.to_bytes(), now=t0 + PENDING_TTL + timedelta(1),
                        encoders=enc)
    assert _app.usage(home, "alice")["count"] >= 1  # (the account's own entry), and no cameo:
    with pytest.raises(NotFound):
        from cameo._enrollment import show

        show(home, "alice")
    # a later enrollment purges what expired
    enroll_begin(home, "alice", faces=faces, voices=[], video=None, encoders=enc, now=t0 + PENDING_TTL * 2)
    with transaction(engine_for(home)) as s:
        assert [r.id for r in s.query(PendingEnrollment).all()] != [p["enrollment_id"]]
        assert s.query(PendingEnrollment).count() == 1
    # and a pending enrollment completes under a consent record that commits to its templates
    p2 = enroll_begin(home, "alice", faces=faces, voices=[], video=None, encoders=enc, now=t0)
    rec2 = ConsentRecord.create(key, id=new_id("consent"), owner="alice", owner_key=key.key_id,
                                purposes=("generate",), modalities=("face",), audience="approved", restrictions=(),
                                templates=tuple(TemplateCommitment(t["modality"], t["encoder"], t["digest"],
                                                                   int(t["samples"])) for t in p2["templates"]),
                                adult_attested=True, created=t0, expires=None)
    done = enroll_complete(home, "alice", p2["enrollment_id"], rec2.to_bytes(), now=t0, encoders=enc)
    assert done["consent_id"] == rec2.id
    with transaction(engine_for(home)) as s:
        assert s.query(PendingEnrollment).count() == 0


def test_a_stalled_body_gets_408_and_holds_nothing(tmp_path: Path) -> None:
    import socket
    from urllib.parse import urlsplit

    with serving(tmp_path, workers=1, env={"CAMEO_SERVE_RECEIVE_TIMEOUT": "1.5"}) as s:
        u = urlsplit(s.url)
        with socket.create_connection((u.hostname, u.port), timeout=20) as c:
            c.sendall(b"POST /v1/grants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"document\": \"")
            t0 = time.monotonic()
            reply = c.recv(65536).decode("latin-1")
            assert time.monotonic() - t0 < 10
        assert reply.startswith("HTTP/1.1 408") and "application/problem+json" in reply
        assert httpx.get(s.url + "/healthz").status_code == 200


def test_a_foreign_rfc9421_client_is_accepted(srv: Server) -> None:
    """Another client's signature (its own label and order, @authority, no body digest on a GET,
    no alg or tag) verifies as RFC 9421 says."""
    from urllib.parse import urlsplit

    alice = _key(srv.homes["owner"], "alice")
    host = urlsplit(srv.url).netloc
    params = (f'("@path" "@method" "@authority");created={int(time.time())};keyid="account:alice";'
              f'nonce="{base64.urlsafe_b64encode(__import__("os").urandom(18)).decode()}"')
    base = f'"@path": /v1/cameos/alice/grants\n"@method": GET\n"@authority": {host}\n"@signature-params": {params}'
    sig = base64.b64encode(alice.sign(base.encode())).decode()
    r = httpx.get(srv.url + "/v1/cameos/alice/grants",
                  headers={"Signature-Input": f"ext={params}", "Signature": f"ext=:{sig}:"})
    assert r.status_code == 200, r.text
