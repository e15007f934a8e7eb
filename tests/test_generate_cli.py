"""`cameo generate`, `provenance verify`, `generator add/list`, `usage` and `audit verify` end to
end through the command line (typer's CliRunner, in process).

The contract: exit 0 ok, 2 bad input, 3 denied (or provenance that does not verify), 4 not found;
``--json`` prints one JSON object; on any denial nothing is written to ``--out`` and no use is
consumed; owners see every denial in ``usage``; outputs carry a C2PA manifest that any C2PA reader
accepts, that verifies against the registry's root, and that fails after a one-byte change.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from conftest import GENERATOR, Registry
from typer.testing import CliRunner

from cli import app

RUNNER = CliRunner()
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Cli:
    def __init__(self, r: Registry, workdir: Path) -> None:
        self.r = r
        self.dir = workdir

    def __call__(self, *args: str, code: int | None = 0) -> Any:
        res = RUNNER.invoke(app, [str(a) for a in args])
        if code is not None:
            assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr, res.exception)
        assert "Traceback" not in res.stdout + res.stderr
        return res

    def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        res = self(*args, "--json", code=code)
        text = res.stdout.strip()
        obj = json.loads(text)  # exactly one JSON document
        assert isinstance(obj, dict)
        return obj

    # -- the flow's commands ------------------------------------------------------------------------
    def grant(self, owner: str = "alice", *extra: str, generator: str = GENERATOR) -> str:
        return self.json("grant", owner, "--to", "bob", "--generator", generator, *extra)["grant_id"]

    def token(self, owner: str = "alice", request: str = "req.json", *extra: str, generator: str = GENERATOR) -> str:
        return self.json("token", owner, "--as", "bob", "--generator", generator, "--request", request, *extra)["token"]

    def generate(self, tokens: list[str], out: str = "out", request: str = "req.json", *, generator: str = GENERATOR,
                 code: int = 0) -> dict[str, Any]:
        args = ["generate", "--request", request, "--generator", generator, "--out", out]
        for t in tokens:
            args += ["--token", t]
        return self.json(*args, code=code)

    def uses(self, owner: str = "alice") -> list[int]:
        return [g["uses"] for g in self.json("grants", owner)["grants"]]


def _vec(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4")


@pytest.fixture
def cli(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """alice and carol enrolled (synthetic face + voice templates); request files in the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps({"prompt": "alice waves from a boat", "params": {"seconds": 2}}))
    (tmp_path / "other.json").write_text(json.dumps({"prompt": "alice says something she never said"}))
    registry.cameo = {w: registry.enroll(w, {"face": _vec(i, 128), "voice": _vec(i + 10, 256)})  # type: ignore[attr-defined]
                      for i, w in enumerate(("alice", "carol"))}
    return Cli(registry, tmp_path)


def _sha256(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


# -- the whole flow -----------------------------------------------------------------------------------
def test_generate_then_verify_provenance_end_to_end(cli):
    gid = cli.grant("alice", "--uses", "2")
    tok = cli.json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json")
    out = cli.generate([tok["token"]])
    # the JSON names the outputs with their digests, the cameos and the tokens
    assert out["generator"] == GENERATOR and out["cameos"] == [cli.r.cameo["alice"]]
    assert out["token_ids"] == [tok["token_id"]]
    files = [Path(o["file"]) for o in out["outputs"]]
    assert sorted(f.suffix for f in files) == [".png", ".wav"]  # face and voice were both granted
    for o, f in zip(out["outputs"], files):
        assert f.resolve().parent == (cli.dir / "out").resolve() and o["digest"] == _sha256(f)
    assert cli.uses() == [1]
    # provenance verifies (exit 0) and says what made the file, from which cameo, under which token
    for f in files:
        pv = cli.json("provenance", "verify", str(f))
        assert pv["state"] == "Trusted" and pv["trusted"] and pv["binding"] == "embedded"
        assert pv["generator"] == GENERATOR and pv["digital_source_type"].endswith("trainedAlgorithmicMedia")
        c = pv["claim"]
        assert c["cameo_ids"] == [cli.r.cameo["alice"]] and c["token_ids"] == [tok["token_id"]]
        assert c["grant_ids"] == [gid] and c["request_digest"] == out["request_digest"]
        assert c["restrictions"] == ["no political content"] and len(c["consent_digests"]) == 1
    assert "Trusted" in cli("provenance", "verify", str(files[0])).stdout
    # the owner's log has the release and the output digests
    entries = cli.json("usage", "alice")["entries"]
    assert [e["event"] for e in entries][-2:] == ["gate:release:allowed", "gate:output"]
    assert sorted(entries[-1]["detail"]["outputs"]) == sorted(o["digest"] for o in out["outputs"])
    assert tok["token"] not in json.dumps(entries)
    assert cli.json("audit", "verify")["ok"] is True


def test_an_independent_c2pa_reader_accepts_the_output(cli):
    cli.grant()
    out = cli.generate([cli.token()])
    for o in out["outputs"]:
        with c2pa.Reader(o["file"]) as r:  # the SDK's default settings: knows nothing of our root
            assert r.get_validation_state() != "Invalid"
            store = json.loads(r.json())
        text = json.dumps(store["manifests"][store["active_manifest"]]["assertions"])
        assert "c2pa.actions" in text and "trainedAlgorithmicMedia" in text


@pytest.mark.parametrize("where", ["middle", "last byte"])
def test_a_tampered_output_fails_provenance_verification(cli, where):
    cli.grant()
    out = cli.generate([cli.token()])
    png = next(Path(o["file"]) for o in out["outputs"] if o["file"].endswith(".png"))
    cli("provenance", "verify", str(png))
    _flip(png, None if where == "middle" else png.stat().st_size - 1)
    err = cli.json("provenance", "verify", str(png), code=3)
    assert err["ok"] is False and err["error_type"] == "ProvenanceInvalid"
    res = cli("provenance", "verify", str(png), code=3)
    assert "error:" in res.stderr


def test_a_file_without_provenance_is_not_found(cli):
    from PIL import Image

    Image.new("RGB", (32, 32), (1, 2, 3)).save(cli.dir / "plain.png")
    err = cli.json("provenance", "verify", "plain.png", code=4)  # no manifest, no watermark: no provenance
    assert err["error_type"] == "ProvenanceMissing" and "no provenance" in err["error"]


# -- denials: exit 3, nothing written, nothing consumed, the owner sees it -------------------------------
def test_a_denied_generate_writes_nothing_and_the_owner_sees_it(cli):
    cli.grant()
    tok = cli.token(request="other.json")  # bound to another request
    before = cli.json("usage", "alice")["denied"]
    err = cli.generate([tok], code=3)
    assert err["error_type"] == "GateDenied" and [r["code"] for r in err["reasons"]] == ["token.request"]
    assert not (cli.dir / "out").exists()
    # an existing --out folder stays as it was
    (cli.dir / "keep").mkdir()
    (cli.dir / "keep" / "mine.txt").write_text("x")
    cli.generate([tok], out="keep", code=3)
    assert [p.name for p in (cli.dir / "keep").iterdir()] == ["mine.txt"]
    # plain output lists the reasons on stderr
    res = cli("generate", "--request", "req.json", "--generator", GENERATOR, "--out", "out", "--token", tok, code=3)
    assert "token.request" in res.stderr and res.stdout == ""
    usage = cli.json("usage", "alice")
    assert usage["denied"] == before + 3
    last = usage["entries"][-1]
    assert last["event"] == "gate:release:denied" and [r["code"] for r in last["detail"]["reasons"]] == ["token.request"]
    assert "token.request" in cli("usage", "alice").stdout
    assert cli.uses() == [0]
    assert cli.json("audit", "verify")["ok"] is True


def test_two_tokens_one_bad_consumes_nothing_and_writes_nothing(cli):
    cli.grant("alice")
    cli.grant("carol")
    good, bad = cli.token("alice"), cli.token("carol", "other.json")
    err = cli.generate([good, bad], code=3)
    assert [r["code"] for r in err["reasons"]] == ["token.request"]
    assert not (cli.dir / "out").exists()
    assert cli.uses("alice") == [0] and cli.uses("carol") == [0]
    assert cli.json("usage", "alice")["entries"][-1]["event"] == "gate:release:denied"  # both owners see it
    assert cli.json("usage", "carol")["entries"][-1]["event"] == "gate:release:denied"
    # the good token was not spent: alone, it goes through
    assert cli.generate([good])["cameos"] == [cli.r.cameo["alice"]]


def test_two_cameos_in_one_call_and_not_three(make_registry, tmp_path, monkeypatch):
    r = make_registry(("alice", "bob", "carol", "dave"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps({"prompt": "three people"}))
    c = Cli(r, tmp_path)
    r.cameo = {w: r.enroll(w, {"face": _vec(i, 128)}) for i, w in enumerate(("alice", "carol", "dave"))}
    for w in r.cameo:
        c.grant(w, "--modality", "face")
    toks = [c.token(w) for w in ("alice", "carol", "dave")]
    err = c.generate(toks, code=3)
    assert "call.too_many" in [x["code"] for x in err["reasons"]] and not (tmp_path / "out").exists()
    out = c.generate(toks[:2])
    assert out["cameos"] == [r.cameo["alice"], r.cameo["carol"]]
    assert c.json("provenance", "verify", out["outputs"][0]["file"])["claim"]["cameo_ids"] == out["cameos"]


def test_a_token_is_used_once(cli):
    cli.grant("alice", "--uses", "3")
    tok = cli.token()
    cli.generate([tok])
    err = cli.generate([tok], out="again", code=3)
    assert [r["code"] for r in err["reasons"]] == ["token.used"] and not (cli.dir / "again").exists()
    assert cli.uses() == [1]


def test_a_face_only_grant_releases_no_voice(cli):
    cli.grant("alice", "--modality", "face")
    out = cli.generate([cli.token()])
    assert [Path(o["file"]).suffix for o in out["outputs"]] == [".png"]  # the demo voices only what it got


def test_a_revoked_grant_denies_generate(cli):
    gid = cli.grant()
    tok = cli.token()
    cli.json("revoke", "alice", "--grant", gid)
    err = cli.generate([tok], code=3)
    assert [r["code"] for r in err["reasons"]] == ["grant.revoked"] and not (cli.dir / "out").exists()


@SQLITE_ONLY
def test_an_unknown_generator_exits_4_and_changes_nothing(cli):
    cli.grant()
    tok = cli.token()
    n = cli.r.count("audit_log")
    err = cli.generate([tok], generator="ghost-gen", code=4)
    assert err["error_type"] == "UnknownGenerator" and "ghost-gen" in err["error"]
    assert not (cli.dir / "out").exists() and cli.uses() == [0] and cli.r.count("audit_log") == n
    cli.json("token", "alice", "--as", "bob", "--generator", "ghost-gen", "--request", "req.json", code=4)


# -- generator registration ---------------------------------------------------------------------------
def _x25519_public(tmp: Path, *, b64: bool) -> Path:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    path = tmp / ("gen.pub.b64" if b64 else "gen.pub")
    path.write_bytes(base64.b64encode(raw) + b"\n" if b64 else raw)
    return path


@SQLITE_ONLY
def test_generator_add_and_list(cli):
    added = cli.json("generator", "add", "gen-b", "--adapter", "demo", "--config", '{"size": 64}')
    assert added == {"id": "gen-b", "adapter": "demo", "config": {"size": 64}}
    listed = {g["id"]: g for g in cli.json("generator", "list")["generators"]}
    assert set(listed) == {GENERATOR, "gen-b"}
    assert listed["gen-b"]["adapter"] == "demo" and listed["gen-b"]["sealed"] is False
    assert "gen-b  adapter=demo  sealed=False" in cli("generator", "list").stdout
    # refusals: exit 2, nothing registered
    for args in (["gen-b", "--adapter", "demo"],                       # taken
                 ["Bad ID", "--adapter", "demo"],                      # invalid id
                 ["gen-c", "--adapter", "no-such-adapter"],            # unknown adapter
                 ["gen-c", "--adapter", "demo", "--config", "[1]"],    # config not an object
                 ["gen-c", "--adapter", "sealed"]):                    # sealed needs --public-key
        err = cli.json("generator", "add", *args, code=2)
        assert err["ok"] is False
    bad_key = cli.dir / "short.pub"
    bad_key.write_bytes(b"\x01" * 31)
    cli.json("generator", "add", "gen-c", "--adapter", "sealed", "--public-key", str(bad_key), code=2)
    assert {g["id"] for g in cli.json("generator", "list")["generators"]} == {GENERATOR, "gen-b"}
    # a sealed generator with its X25519 key (raw or base64)
    for gid, b64 in (("gen-sealed", False), ("gen-sealed-b64", True)):
        cli.json("generator", "add", gid, "--adapter", "sealed", "--public-key", str(_x25519_public(cli.dir, b64=b64)))
    listed = {g["id"]: g for g in cli.json("generator", "list")["generators"]}
    assert listed["gen-sealed"]["sealed"] is True and listed["gen-sealed-b64"]["sealed"] is True
    assert listed["gen-sealed"]["adapter"] == "sealed"


@SQLITE_ONLY
@pytest.mark.parametrize("edge", [b"\n", b" "])
def test_a_raw_public_key_ending_in_a_whitespace_byte_is_accepted(cli, edge):
    key = cli.dir / "gen.pub"
    key.write_bytes(b"\x07" * 31 + edge)  # any 32 bytes are an X25519 public key
    cli.json("generator", "add", "gen-raw", "--adapter", "sealed", "--public-key", str(key))


@SQLITE_ONLY
def test_a_token_drives_only_its_own_generator(cli):
    cli.json("generator", "add", "gen-b", "--adapter", "demo", "--config", '{"size": 64}')
    cli.grant("alice", "--uses", "3", generator=f"{GENERATOR},gen-b")
    tok = cli.token()  # for studio-v1
    err = cli.generate([tok], generator="gen-b", code=3)
    assert [r["code"] for r in err["reasons"]] == ["token.audience"] and not (cli.dir / "out").exists()
    out = cli.generate([cli.token(generator="gen-b")], generator="gen-b")
    pv = cli.json("provenance", "verify", out["outputs"][0]["file"])
    assert pv["generator"] == "gen-b" and pv["claim"]["generator_id"] == "gen-b"


@SQLITE_ONLY
def test_generate_through_a_sealed_generator(cli):
    cli.json("generator", "add", "gen-sealed", "--adapter", "sealed",
             "--public-key", str(_x25519_public(cli.dir, b64=True)))
    cli.grant("alice", generator="gen-sealed")
    out = cli.generate([cli.token(generator="gen-sealed")], generator="gen-sealed")
    (o,) = out["outputs"]
    f = Path(o["file"])
    assert f.name.endswith(".cameo-sealed") and o["digest"] == _sha256(f)
    pv = cli.json("provenance", "verify", str(f))  # a detached, signed statement beside it
    assert pv["binding"] == "detached" and pv["claim"]["cameo_ids"] == [cli.r.cameo["alice"]]
    _flip(f)
    cli.json("provenance", "verify", str(f), code=3)


# -- real faces: reference screening through the CLI ------------------------------------------------------
@SQLITE_ONLY
@pytest.mark.data
def test_cli_enroll_and_an_unconsented_face_in_a_reference(registry, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = Cli(registry, tmp_path)
    faces = data_dir / "faces"
    c.json("enroll", "alice", "--face", faces / "obama/1.jpg", "--face", faces / "obama/2.jpg")
    c.json("enroll", "carol", "--face", faces / "biden/1.jpg", "--face", faces / "biden/2.jpg")
    (tmp_path / "ref.json").write_text(json.dumps({"prompt": "the two of them",
                                                   "references": [str(faces / "_multi/biden_obama_bystander.jpg")]}))
    for w in ("alice", "carol"):
        c.grant(w, "--modality", "face")
    err = c.generate([c.token("alice", "ref.json")], request="ref.json", code=3)
    assert err["error_type"] == "ScreeningDenied" and [r["code"] for r in err["reasons"]] == ["screen.unconsented"]
    assert not (tmp_path / "out").exists() and c.uses("alice") == [0]
    usage = c.json("usage", "carol")
    assert usage["denied"] == 1 and usage["entries"][-1]["event"] == "screen:match:denied"
    assert "screen.unconsented" in c("usage", "carol").stdout
    out = c.generate([c.token("alice", "ref.json"), c.token("carol", "ref.json")], request="ref.json")
    assert len(out["cameos"]) == 2 and out["outputs"]
    assert c.json("audit", "verify")["ok"] is True
