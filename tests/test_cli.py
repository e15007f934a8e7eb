"""The command line, through typer's CliRunner, on SQLite and PostgreSQL.

The contract: exit 0 ok, 2 bad input or usage, 3 denied, 4 not found, 1 anything else; ``--json``
prints exactly one JSON object; bad input gets a clear message and changes nothing (every table, the
keystore and the home's files are compared before and after).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, PASSPHRASE, Registry, dir_listing, dump_tables
from typer.testing import CliRunner

from cli import app

RUNNER = CliRunner()


class Cli:
    def __init__(self, r: Registry, workdir: Path) -> None:
        self.r = r
        self.dir = workdir

    def __call__(self, *args: str, code: int | None = 0, env: dict[str, str | None] | None = None) -> Any:
        res = RUNNER.invoke(app, list(args), env=env)
        if code is not None:
            assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr, res.exception)
        assert "Traceback" not in res.stdout + res.stderr
        return res

    def json(self, *args: str, code: int = 0, env: dict[str, str | None] | None = None) -> dict[str, Any]:
        res = self(*args, "--json", code=code, env=env)
        return one_json_object(res.stdout)

    def state(self) -> tuple[Any, Any]:
        """Every row of every table, and every file of the home but the database's own."""
        files = {k: v for k, v in dir_listing(self.r.home.path).items() if not k.startswith("cameo.db")
                 and not k.endswith(".json") and not k.startswith("pytest")}
        return dump_tables(self.r.engine), files


def one_json_object(stdout: str) -> dict[str, Any]:
    text = stdout.strip()
    assert text, "nothing on stdout"
    obj = json.loads(text)  # one document: trailing text would fail here
    assert isinstance(obj, dict), obj
    return obj


@pytest.fixture
def cli(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """alice, bob and carol (keystore passphrase in CAMEO_PASSPHRASE); request files in the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps({"prompt": "alice waves from a boat", "params": {"seconds": 4}}))
    (tmp_path / "other.json").write_text(json.dumps({"prompt": "alice says something she never said"}))
    (tmp_path / "broken.json").write_text('{"prompt": ')
    (tmp_path / "extra.json").write_text(json.dumps({"prompt": "p", "negative": "x"}))
    (tmp_path / "dupkey.json").write_text('{"prompt": "a", "prompt": "b"}')
    (tmp_path / "nan.json").write_text('{"prompt": "a", "params": {"x": NaN}}')
    (tmp_path / "badref.json").write_text(json.dumps({"prompt": "a", "references": ["missing.jpg"]}))
    return Cli(registry, tmp_path)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _grant(cli: Cli, *extra: str) -> str:
    """alice grants bob; she is enrolled first (a check, like a release, is denied without a cameo)."""
    from cameo import AlreadyEnrolled

    try:
        cli.r.enroll("alice", {"face": np.ones(128, dtype="<f4"), "voice": np.ones(256, dtype="<f4")})
    except AlreadyEnrolled:
        pass
    return cli.json("grant", "alice", "--to", "bob", "--generator", GENERATOR, *extra)["grant_id"]


def _token(cli: Cli, request: str = "req.json", grantee: str = "bob") -> str:
    return cli.json("token", "alice", "--as", grantee, "--generator", GENERATOR, "--request", request)["token"]


# -- the happy path, every command once, in JSON ----------------------------------------------------------
def test_every_command_prints_one_json_object(cli, tmp_path):
    out = cli.json("init")
    assert out["registry_id"].startswith("cameo-registry-") and "password" not in out["database"]
    out = cli.json("account", "create", "dave")
    assert out["handle"] == "dave" and out["key_id"].startswith("ed25519:")
    assert (cli.r.home.keys_dir / "dave.pem").stat().st_mode & 0o077 == 0
    f = cli.json("follow", "alice", "bob")
    assert (f["follower"], f["followee"]) == ("alice", "bob") and f["digest"].startswith("sha256:")
    gen = cli.json("generator", "add", "other-gen", "--adapter", "demo")
    assert gen["id"] == "other-gen"
    assert {g["id"] for g in cli.json("generator", "list")["generators"]} >= {GENERATOR, "other-gen"}
    cli.r.enroll("alice", {"face": np.ones(128, dtype="<f4"), "voice": np.ones(256, dtype="<f4")})
    g = cli.json("grant", "alice", "--to", "bob", "--generator", GENERATOR, "--uses", "2", "--expires", "1d")
    assert (g["owner"], g["grantee"], g["max_uses"], g["modalities"]) == ("alice", "bob", 2, ["face", "voice"])
    listed = cli.json("grants", "alice")["grants"]
    assert [x["id"] for x in listed] == [g["grant_id"]] and listed[0]["uses"] == 0
    t = cli.json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json", "--ttl", "2m")
    assert t["grant_id"] == g["grant_id"] and t["token"].startswith("v4.public.")
    c = cli.json("check", "--token", t["token"], "--generator", GENERATOR, "--request", "req.json")
    assert c["allowed"] is True and c["tokens"][0]["token_id"] == t["token_id"]
    u = cli.json("usage", "alice")
    assert u["handle"] == "alice" and u["denied"] == 0
    assert [e["event"] for e in u["entries"]][-3:] == ["consent:grant:create", "token:mint:allowed", "gate:check:allowed"]
    assert t["token"] not in json.dumps(u)
    rv = cli.json("revoke", "alice", "--grant", g["grant_id"])
    assert rv["revoked_grants"] == [g["grant_id"]]
    n = cli.r.count("audit_log")
    assert cli.json("audit", "verify") == {"ok": True, "entries": n, "first_bad_seq": None, "problem": None,
                                           "tree_size": 0, "pending": n, "checkpoints": 0}
    cp = cli.json("audit", "checkpoint")
    assert cp["tree_size"] == n and cp["note"].startswith(cp["origin"] + f"\n{n}\n")
    assert cli.json("audit", "verify")["tree_size"] == n


def test_plain_output_and_the_token_on_stdout(cli):
    _grant(cli)
    res = cli("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json")
    token = res.stdout.strip()
    assert token.startswith("v4.public.") and "\n" not in token
    res = cli("check", "--token", token, "--generator", GENERATOR, "--request", "req.json")
    assert res.stdout.strip() == "allowed"
    res = cli("audit", "verify")
    assert "intact" in res.stdout


# -- denials: exit 3, with the reason, in the owner's log ---------------------------------------------------
def _lib_grant(cli: Cli, created: datetime, **kw: Any) -> str:
    """A grant made through the library with an explicit time (the CLI reads the clock)."""
    return cli.r.grant("alice", "bob", created=created, now=_now(), **kw).id


def _lib_token(cli: Cli, when: datetime) -> str:
    from cameo._request import GenerationRequest

    req = GenerationRequest.load(cli.dir / "req.json")
    return cli.r.token("alice", "bob", req, now=when)


def _release(cli: Cli, token: str) -> None:
    from cameo._request import GenerationRequest

    req = GenerationRequest.load(cli.dir / "req.json")
    cli.r.gate().decide_release([token], generator_id=GENERATOR, request=req, now=_now(), load_templates=False)


def _d_expired(cli: Cli) -> tuple[str, str, str]:
    _lib_grant(cli, _now() - timedelta(hours=2))
    return _lib_token(cli, _now() - timedelta(hours=1)), GENERATOR, "req.json"


def _d_not_yet_valid(cli: Cli) -> tuple[str, str, str]:
    _lib_grant(cli, _now() - timedelta(hours=2))
    return _lib_token(cli, _now() + timedelta(hours=1)), GENERATOR, "req.json"


def _d_wrong_generator(cli: Cli) -> tuple[str, str, str]:
    cli.json("generator", "add", "other-gen", "--adapter", "demo")
    _grant(cli)
    return _token(cli), "other-gen", "req.json"


def _d_other_request(cli: Cli) -> tuple[str, str, str]:
    _grant(cli)
    return _token(cli), GENERATOR, "other.json"


def _d_used(cli: Cli) -> tuple[str, str, str]:
    _grant(cli, "--uses", "3")
    tok = _token(cli)
    _release(cli, tok)
    return tok, GENERATOR, "req.json"


def _d_revoked(cli: Cli) -> tuple[str, str, str]:
    gid = _grant(cli)
    tok = _token(cli)
    cli.json("revoke", "alice", "--grant", gid)
    return tok, GENERATOR, "req.json"


def _d_withdrawn(cli: Cli) -> tuple[str, str, str]:
    cli.r.enroll("alice", {"face": np.ones(128, dtype="<f4"), "voice": np.ones(256, dtype="<f4")})
    _grant(cli)
    tok = _token(cli)
    cli.json("revoke", "alice", "--all")
    return tok, GENERATOR, "req.json"


def _d_exhausted(cli: Cli) -> tuple[str, str, str]:
    _grant(cli, "--uses", "1")
    first, second = _token(cli), _token(cli)
    _release(cli, first)
    return second, GENERATOR, "req.json"


def _d_tampered(cli: Cli) -> tuple[str, str, str]:
    _grant(cli)
    tok = _token(cli)
    i = len(tok) // 2
    return tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1:], GENERATOR, "req.json"


CHECK_DENIALS = [
    pytest.param(_d_expired, "token.expired", id="expired"),
    pytest.param(_d_not_yet_valid, "token.not_yet_valid", id="not-yet-valid"),
    pytest.param(_d_wrong_generator, "token.audience", id="wrong-generator"),
    pytest.param(_d_other_request, "token.request", id="different-request"),
    pytest.param(_d_used, "token.used", id="already-used"),
    pytest.param(_d_revoked, "grant.revoked", id="grant-revoked"),
    pytest.param(_d_withdrawn, "consent.withdrawn", id="consent-withdrawn"),
    pytest.param(_d_exhausted, "grant.exhausted", id="uses-exhausted"),
]


@pytest.mark.parametrize(("build", "code"), CHECK_DENIALS)
def test_check_denials_exit_3_with_their_reason_and_are_logged(cli, build, code):
    tok, gen, req = build(cli)
    out = cli.json("check", "--token", tok, "--generator", gen, "--request", req, code=3)
    assert out["allowed"] is False and code in {r["code"] for r in out["reasons"]}
    plain = cli("check", "--token", tok, "--generator", gen, "--request", req, code=3)
    assert plain.stdout.strip() == "denied" and code in plain.stderr
    usage = cli.json("usage", "alice")
    denials = [e for e in usage["entries"] if e["event"] == "gate:check:denied"]
    assert len(denials) == 2 and all(code in {r["code"] for r in e["detail"]["reasons"]} for e in denials)
    assert usage["denied"] >= 2
    assert cli.json("audit", "verify")["ok"] is True


def test_a_tampered_token_is_denied(cli):
    tok, gen, req = _d_tampered(cli)
    out = cli.json("check", "--token", tok, "--generator", gen, "--request", req, code=3)
    assert out["reasons"][0]["code"] in ("token.signature", "token.malformed")


def test_mint_denials_exit_3_with_their_reason_and_are_logged(cli):
    out = cli.json("token", "alice", "--as", "carol", "--generator", GENERATOR, "--request", "req.json", code=3)
    assert out["error_type"] == "MintDenied" and [r["code"] for r in out["reasons"]] == ["grant.none"]
    gid = _grant(cli)
    cli.json("revoke", "alice", "--grant", gid)
    out = cli.json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json", code=3)
    assert "grant.revoked" in {r["code"] for r in out["reasons"]}
    denied = [e for e in cli.json("usage", "alice")["entries"] if e["event"] == "token:mint:denied"]
    assert [{r["code"] for r in e["detail"]["reasons"]} for e in denied] == [{"grant.none"}, {"grant.revoked"}]


# -- bad input: exit 2 or 4, a clear message, nothing changed ---------------------------------------------------
G = ("--generator", GENERATOR)
LONG = "a" * 100
BAD_INPUT = [
    # (arguments, exit code, environment overrides)
    (("token", "alice", "--as", "bob", *G, "--request", "broken.json"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "extra.json"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "dupkey.json"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "nan.json"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "badref.json"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "nothere.json"), 2, {}),
    (("check", "--token", "x", *G, "--request", "broken.json"), 2, {}),
    (("grant", "alice", "--to", "mallory", *G), 4, {}),
    (("grant", "mallory", "--to", "bob", *G), 4, {}),
    (("token", "alice", "--as", "mallory", *G, "--request", "req.json"), 4, {}),
    (("token", "mallory", "--as", "bob", *G, "--request", "req.json"), 4, {}),
    (("usage", "mallory"), 4, {}),
    (("grants", "mallory"), 4, {}),
    (("follow", "alice", "mallory"), 4, {}),
    (("revoke", "alice", "--grant", "grant_nowhere"), 4, {}),
    (("grant", "alice", "--to", "bob", "--generator", "ghost-gen"), 4, {}),
    (("token", "alice", "--as", "bob", "--generator", "ghost-gen", "--request", "req.json"), 4, {}),
    (("check", "--token", "x", "--generator", "ghost-gen", "--request", "req.json"), 4, {}),
    (("grant", "alice", "--to", "bob", *G), 2, {"CAMEO_PASSPHRASE": "not the passphrase"}),
    (("revoke", "alice", "--all"), 2, {"CAMEO_PASSPHRASE": "not the passphrase"}),
    (("token", "alice", "--as", "bob", *G, "--request", "req.json"), 2, {"CAMEO_PASSPHRASE": "wrong-wrong"}),
    (("account", "create", "alice"), 2, {}),
    (("account", "create", "bob"), 2, {"CAMEO_PASSPHRASE": "another passphrase"}),
    (("account", "create", "dave"), 2, {"CAMEO_PASSPHRASE": "short"}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "0s"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "99999d"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "9999999w"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "soon"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "-1d"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "1y"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", ""), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--expires", "1e9s"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "req.json", "--ttl", "2d"), 2, {}),
    (("token", "alice", "--as", "bob", *G, "--request", "req.json", "--ttl", "0m"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--uses", "0"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--uses", "-1"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--uses", "1000001"), 2, {}),
    (("grant", "alice", "--to", "alice'; DROP TABLE grants;--", *G), 2, {}),
    (("account", "create", "alice'; DROP TABLE accounts;--"), 2, {}),
    (("account", "create", "Robert'); DROP TABLE accounts;--"), 2, {}),
    (("account", "create", "../../etc/passwd"), 2, {}),
    (("account", "create", "../alice"), 2, {}),
    (("account", "create", LONG), 2, {}),
    (("account", "create", "ALICE"), 2, {}),
    (("account", "create", "al ice"), 2, {}),
    (("account", "create", "\u0430lice"), 2, {}),  # a Cyrillic a
    (("account", "create", "a"), 2, {}),
    (("account", "create", "alice%"), 2, {}),
    (("usage", "x' OR 1=1--"), 2, {}),
    (("grants", "alice\n"), 2, {}),
    (("revoke", "alice"), 2, {}),
    (("revoke", "alice", "--grant", "g", "--all"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--uses", "many"), 2, {}),
    (("grant", "alice", "--to", "bob"), 2, {}),  # no --generator
    (("grant", "alice", "--to", "bob", *G, "--modality", "body"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--purpose", "train"), 2, {}),
    (("grant", "alice", "--to", "bob", *G, "--modality", "face,face"), 2, {}),
    (("grant", "alice", "--to", "bob", *G), 2, {"CAMEO_PASSPHRASE": None}),
    (("generator", "add", "Bad Id", "--adapter", "demo"), 2, {}),
    (("generator", "add", "new-gen", "--adapter", "nonesuch"), 2, {}),
    (("generator", "add", GENERATOR, "--adapter", "demo"), 2, {}),
    (("nonsense",), 2, {}),
]
IDS = [f"{i:02d}-" + "-".join(a[:2]).replace(" ", "_")[:30] for i, (a, _, _) in enumerate(BAD_INPUT)]


@pytest.mark.parametrize(("args", "code", "env"), BAD_INPUT, ids=IDS)
def test_bad_input_exits_2_or_4_and_changes_nothing(cli, args, code, env):
    gid = _grant(cli)  # something to change
    before = cli.state()
    res = cli(*args, code=code, env=env)
    message = (res.stderr or res.stdout).strip()
    assert message and len(message) < 2000, "a clear, short message"
    assert PASSPHRASE not in res.stdout + res.stderr
    assert cli.state() == before, "bad input changed the registry"
    assert cli.r.grant_row(gid).revoked_at is None


# Bad input detected by our own code (not by click's parser) must honour --json.
def _json_case(args: tuple[str, ...]) -> bool:
    joined = " ".join(args)
    return not (joined.endswith("--uses many") or args == ("nonsense",) or args == ("grant", "alice", "--to", "bob"))


def _json_params() -> list[Any]:
    out = []
    for (args, code, env), id_ in zip(BAD_INPUT, IDS):
        if not _json_case(args):
            continue
        out.append(pytest.param(args, code, env, id=id_))
    return out


@pytest.mark.parametrize(("args", "code", "env"), _json_params())
def test_bad_input_with_json_prints_one_json_error_object(cli, args, code, env):
    before = cli.state()
    res = cli(*args, "--json", code=code, env=env)
    out = one_json_object(res.stdout)
    assert out["ok"] is False and out["exit_code"] == code and out["error"]
    assert cli.state() == before


def test_commands_before_init_say_so(tmp_path, monkeypatch):
    home = tmp_path / "empty"
    monkeypatch.setenv("CAMEO_HOME", str(home))
    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAMEO_PASSPHRASE", PASSPHRASE)
    for args in (("usage", "alice"), ("grants", "alice"), ("account", "create", "alice")):
        res = RUNNER.invoke(app, [*args, "--json"])
        assert res.exit_code == 4, (args, res.stdout, res.stderr)
        assert "cameo init" in one_json_object(res.stdout)["error"]
    assert not home.exists(), "a command before init created files"
    from conftest import forget_engine

    forget_engine(f"sqlite:///{home / 'cameo.db'}")
    # with the home folder present but empty, the same (and no database file appears)
    home.mkdir()
    res = RUNNER.invoke(app, ["usage", "alice", "--json"])
    assert res.exit_code == 4 and list(home.iterdir()) == []
    forget_engine(f"sqlite:///{home / 'cameo.db'}")


def test_audit_verify_before_init_prints_a_json_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMEO_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    res = RUNNER.invoke(app, ["audit", "verify", "--json"])
    assert res.exit_code == 4
    assert one_json_object(res.stdout)["exit_code"] == 4


def test_init_is_idempotent_and_keeps_its_keys(tmp_path, monkeypatch):
    home = tmp_path / "h"
    monkeypatch.setenv("CAMEO_HOME", str(home))
    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    first = one_json_object(RUNNER.invoke(app, ["init", "--json"]).stdout)
    assert {"vault key", "token key"} <= set(first["created"])
    listing = dir_listing(home / "registry"), (home / "vault.key").read_bytes()
    assert (home / "vault.key").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    second = one_json_object(RUNNER.invoke(app, ["init", "--json"]).stdout)
    assert second["created"] == [] and second["registry_id"] == first["registry_id"]
    assert (dir_listing(home / "registry"), (home / "vault.key").read_bytes()) == listing
    from conftest import forget_engine

    forget_engine(f"sqlite:///{home / 'cameo.db'}")


def test_a_world_readable_vault_key_is_refused(cli):
    kek = cli.r.home.kek_path
    kek.chmod(0o644)
    out = cli.json("init", code=1)
    assert "chmod 600" in out["error"] and out["error_type"] == "VaultError"


def test_audit_verify_exits_3_naming_the_first_bad_entry(cli):
    _grant(cli)
    _token(cli)
    from sqlalchemy import text

    with cli.r.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET detail = :d WHERE seq = 2"), {"d": '{"forged":true}'})
    out = cli.json("audit", "verify", code=3)
    assert out == {"ok": False, "entries": 2, "first_bad_seq": 2, "problem": out["problem"], "tree_size": 0,
                   "pending": 0, "checkpoints": 0}
    res = cli("audit", "verify", code=3)
    assert "entry 2" in res.stderr


def test_secrets_never_reach_the_output(cli):
    gid = _grant(cli)
    tok = _token(cli)
    outputs = []
    for args in (("usage", "alice"), ("grants", "alice"), ("revoke", "alice", "--grant", gid), ("audit", "verify")):
        outputs.append(cli(*args, "--json").stdout)
    pem = (cli.r.home.keys_dir / "alice.pem").read_text()
    kek = cli.r.home.kek_path.read_text().strip()
    for text_ in outputs:
        assert tok not in text_ and PASSPHRASE not in text_ and kek not in text_ and pem[40:80] not in text_
