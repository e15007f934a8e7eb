"""Command-line friction found while trying cameo as a new user would (issue 9), through typer's
CliRunner on a real registry (SQLite and PostgreSQL), and through a real process where a pipe
instead of a terminal matters.

Each test fails on the behaviour before the fix: a face-only cameo's default grant that broke
``token``, no ``--version``, ``--home``/``--db`` refused after the subcommand, progress only on a
terminal, tables of raw ids, ``show`` reporting the enrollment time as the last use, a duplicate
grant called a duplicate handle, a demo that left its registry in the temp folder, and a README
tour that could not be run as written.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, PASSPHRASE, Registry, dump_tables
from typer.testing import CliRunner

from cli import app, hoist_root_options

RUNNER = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, code: int | None = 0, env: dict[str, str | None] | None = None) -> Any:
    res = RUNNER.invoke(app, list(args), env=env)
    if code is not None:
        assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr, res.exception)
    assert "Traceback" not in res.stdout + res.stderr
    return res


def run_json(*args: str, code: int = 0, env: dict[str, str | None] | None = None) -> dict[str, Any]:
    obj = json.loads(run(*args, "--json", code=code, env=env).stdout.strip())  # one document, nothing else
    assert isinstance(obj, dict)
    return obj


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(128).astype("<f4")


@pytest.fixture
def req(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps({"prompt": "a person waves", "params": {}, "references": []}))
    return "req.json"


# -- 1. a grant's default modalities follow what the cameo has ---------------------------------------------------
def test_a_face_only_cameos_default_grant_is_for_face_and_mints_a_token(registry: Registry, req: str) -> None:
    registry.enroll("carol", {"face": _face(1)})
    g = run_json("grant", "carol", "--to", "bob", "--generator", GENERATOR)
    assert g["modalities"] == ["face"]
    t = run_json("token", "carol", "--as", "bob", "--generator", GENERATOR, "--request", req)
    assert t["token"].startswith("v4.public.") and t["grant_id"] == g["grant_id"]
    [row] = run_json("grants", "carol")["grants"]
    assert row["modalities"] == ["face"] and row["state"] == "active" and row["uses_left"] == 1


def test_without_a_cameo_the_default_grant_is_face_and_voice(registry: Registry) -> None:
    assert run_json("grant", "alice", "--to", "bob", "--generator", GENERATOR)["modalities"] == ["face", "voice"]
    registry.enroll("carol", {"face": _face(2), "voice": _face(3)})
    assert run_json("grant", "carol", "--to", "bob", "--generator", GENERATOR)["modalities"] == ["face", "voice"]


@pytest.mark.parametrize("modality", ["voice", "face,voice"])
def test_a_modality_the_cameo_lacks_is_bad_input_and_changes_nothing(registry: Registry, modality: str) -> None:
    registry.enroll("carol", {"face": _face(4)})
    before = dump_tables(registry.engine)
    err = run_json("grant", "carol", "--to", "bob", "--generator", GENERATOR, "--modality", modality, code=2)
    assert err["error_type"] == "BadInput" and "no voice template" in err["error"] and "--modality" in err["error"]
    assert dump_tables(registry.engine) == before
    plain = run("grant", "carol", "--to", "bob", "--generator", GENERATOR, "--modality", modality, code=2)
    assert plain.stdout == "" and "no voice template" in plain.stderr


def test_grants_is_a_table_with_modalities_uses_left_and_state(registry: Registry, req: str) -> None:
    live = run_json("grant", "alice", "--to", "bob", "--generator", GENERATOR, "--uses", "3", "--modality", "face")
    gone = run_json("grant", "alice", "--to", "carol", "--generator", GENERATOR)
    run("revoke", "alice", "--grant", gone["grant_id"])
    text = run("grants", "alice").stdout
    header, *rows = text.splitlines()
    assert header.split() == ["GRANT", "GRANTEE", "MODALITIES", "GENERATORS", "USES", "LEFT", "EXPIRES", "STATE"]
    by_id = {r.split()[0]: r for r in rows}
    assert re.search(r"\bbob\s+face\s+studio-v1\s+3 of 3\b.*\bactive$", by_id[live["grant_id"]])
    assert re.search(r"\bcarol\s+face,voice\s+studio-v1\s+1 of 1\b.*\brevoked\b", by_id[gone["grant_id"]])
    j = {g["id"]: g for g in run_json("grants", "alice")["grants"]}
    assert j[live["grant_id"]]["modalities"] == ["face"] and j[gone["grant_id"]]["state"] == "revoked"
    assert {"id", "grantee", "generators", "not_after", "uses", "max_uses", "revoked_at"} <= set(j[live["grant_id"]])


# -- 3. --version, and --home / --db after the subcommand ----------------------------------------------------------
def test_version_prints_the_installed_version() -> None:
    res = run("--version")
    assert res.stdout.strip() == f"cameo {version('cameo')}" == "cameo 0.1.0"


def test_hoist_root_options_moves_home_and_db_in_front() -> None:
    assert hoist_root_options(["init", "--home", "D", "--json"]) == ["--home", "D", "init", "--json"]
    assert hoist_root_options(["usage", "alice", "--db=sqlite:///x.db", "--home", "H"]) == \
        ["--db=sqlite:///x.db", "--home", "H", "usage", "alice"]
    assert hoist_root_options(["grant", "a", "--", "--home", "x"]) == ["grant", "a", "--", "--home", "x"]
    assert hoist_root_options(["--home", "A", "init"]) == ["--home", "A", "init"]


def test_home_and_db_are_accepted_after_the_subcommand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CAMEO_HOME", "CAMEO_DATABASE_URL", "CAMEO_KEK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAMEO_PASSPHRASE", PASSPHRASE)
    alt, other = tmp_path / "alt", tmp_path / "other"
    out = run_json("init", "--home", str(alt), env={"CAMEO_HOME": ""})
    assert out["home"] == str(alt) and (alt / "cameo.db").is_file()
    url = f"sqlite:///{other / 'elsewhere.db'}"
    other.mkdir()
    run("init", "--home", str(other), "--db", url)
    assert (other / "elsewhere.db").is_file() and not (other / "cameo.db").exists()
    run("account", "create", "alice", "--home", str(other), "--db", url)
    assert run_json("usage", "alice", "--db", url, "--home", str(other))["count"] == 1
    assert run_json("usage", "alice", "--home", str(alt), code=4)["error_type"] == "UnknownAccount"


# -- 4. readable tables: usage (handles, grantee, generator, output digest) and show (last use) --------------------
def _release(registry: Registry, token: str, request: Any) -> None:
    registry.gate().decide_release([token], generator_id=GENERATOR, request=request, now=datetime.now(UTC),
                                   load_templates=False)


def test_usage_names_grantee_generator_and_output_digest(registry: Registry, req: str) -> None:
    from cameo.registry import _audit
    from cameo._request import GenerationRequest

    registry.enroll("alice", {"face": _face(5)})
    run("grant", "alice", "--to", "bob", "--generator", GENERATOR, "--uses", "2")
    request = GenerationRequest.load(Path(req))
    tok = run_json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", req)
    _release(registry, tok["token"], request)
    digest = "sha256:" + "ab" * 32
    with registry.session() as s:  # what generate appends once the output is signed
        _audit.append(s, "gate:output", now=datetime.now(UTC), subject=registry.ids["alice"],
                      detail={"generator": GENERATOR, "request_digest": request.digest, "token": tok["token_id"],
                              "outputs": [digest]})
    from conditioning._errors import GateDenied

    with pytest.raises(GateDenied):  # the same token again: denied (already used), and audited
        _release(registry, tok["token"], request)
    entries = run_json("usage", "alice")["entries"]
    uses = [e for e in entries if e["token_id"] == tok["token_id"]]
    assert {e["event"] for e in uses} >= {"token:mint:allowed", "gate:output", "gate:release:denied"}
    assert all(e["grantee"] == "bob" and e["generator"] == GENERATOR for e in uses)
    assert all(e["outputs"] == [digest] for e in uses if e["event"] in ("gate:release:allowed", "gate:output"))
    assert all(e["outputs"] == [] for e in uses if e["event"] == "gate:release:denied")  # the reuse made nothing
    grant_entry = next(e for e in entries if e["event"] == "consent:grant:create")
    assert grant_entry["grantee"] == "bob" and grant_entry["actor_handle"] == "alice"
    assert all({"seq", "ts", "event", "actor", "detail"} <= set(e) for e in entries)

    text = run("usage", "alice").stdout
    assert text.splitlines()[0].split() == ["SEQ", "TIME", "EVENT", "GRANTEE", "GENERATOR", "TOKEN", "DETAIL"]
    out_line = next(line for line in text.splitlines() if "gate:output" in line)
    assert "bob" in out_line and GENERATOR in out_line and "output sha256:abababababab" in out_line
    assert "acc_" not in text, "the table names people by handle"


def test_show_reports_the_last_use_from_token_uses(registry: Registry, req: str) -> None:
    from cameo._request import GenerationRequest

    registry.enroll("alice", {"face": _face(6)})
    shown = run_json("show", "alice")
    assert shown["last_used"] is None, "enrolling is not a use"
    assert re.search(r"last used\s+never", run("show", "alice").stdout)
    run("grant", "alice", "--to", "bob", "--generator", GENERATOR)
    tok = run_json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", req)
    _release(registry, tok["token"], GenerationRequest.load(Path(req)))
    with registry.engine.connect() as conn:
        from sqlalchemy import text

        used_at = conn.execute(text("SELECT used_at FROM token_uses")).scalar_one()
    assert run_json("show", "alice")["last_used"] == used_at
    plain = run("show", "alice").stdout
    assert re.search(r"last used\s+" + re.escape(used_at[:10]), plain)
    assert re.search(r"^MODALITY\s+ENCODER\s+SAMPLES\s+QUALITY$", plain, re.M)


# -- 7. a duplicate grant is a duplicate document -----------------------------------------------------------------
def test_a_replayed_grant_is_a_duplicate_document(registry: Registry) -> None:
    from cameo.registry import _services as reg
    from cameo._errors import BadInput, DuplicateDocument, DuplicateHandle

    g = registry.grant()
    with pytest.raises(DuplicateDocument) as e, registry.session() as s:
        reg.submit_grant(s, g.to_bytes(), now=registry.now)
    assert isinstance(e.value, BadInput) and not isinstance(e.value, DuplicateHandle) and e.value.exit_code == 2


# -- 2. progress on stderr, also without a terminal -------------------------------------------------------------
def test_progress_goes_to_stderr_a_plain_line_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    from cli import _Progress

    with _Progress("enroll") as p:  # pytest's capture is not a terminal
        p.step("embedding faces", 1, 2)
        p.step("embedding faces", 2, 2)
        p.step("embedding voice clips", 1, 1)
        p.stage("searching the registry")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["enroll: embedding faces (2 photos)", "enroll: embedding voice clips (1 clip)",
                                "enroll: searching the registry"]


def test_on_a_terminal_progress_is_a_bar_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cli import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    with _Progress("match") as p:
        assert p.bar is not None
        p.stage("looking for faces")
        p.step("embedding faces", 1, 3)
    assert capsys.readouterr().out == ""


def test_generate_reports_its_stages(registry: Registry, req: str, tmp_path: Path) -> None:
    """A real generate through the CLI: its stages on stderr, only the output file on stdout."""
    registry.enroll("alice", {"face": _face(7)}, encoder="dlib-resnet-v1@55533b28a95800a5")
    run("grant", "alice", "--to", "bob", "--generator", GENERATOR)
    tok = run_json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", req)["token"]
    res = run("generate", "--request", req, "--token", tok, "--generator", GENERATOR, "--out", "out", code=None)
    lines = [x for x in res.stderr.splitlines() if x.startswith("generate: ")]
    assert lines[:3] == ["generate: staging 0 reference(s)",
                         "generate: screening 0 reference(s) for enrolled faces and voices",
                         "generate: verifying 1 token(s) at the gate"], res.stderr
    if res.exit_code == 0:
        assert "generate: watermarking and signing provenance" in lines
        assert all(Path(f).is_file() for f in res.stdout.split()), "stdout holds the output files only"


@pytest.mark.data
def test_match_progress_in_a_real_process_with_stderr_a_pipe(registry: Registry, data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAMEO_DEBUG"}
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "match", str(data_dir / "faces/obama/1.jpg"),
                          "--json"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["file"] == "1.jpg", "stdout is one JSON object"
    lines = [x for x in res.stderr.splitlines() if x.startswith("match: ")]
    assert lines == ["match: looking for faces and voices in 1.jpg",
                     "match: searching the registry (1 face(s), 0 voice(s))"]


# -- 5. the demo cleans up after itself -------------------------------------------------------------------------
def _stub(work: Path, db_url: str, say: Any) -> dict[str, Any]:
    (work / "home").mkdir()
    (work / "home" / "cameo.db").write_bytes(b"")
    return {"ok": True, "workdir": str(work), "steps": []}


@pytest.mark.parametrize(("keep", "exists", "left"), [(False, False, False), (True, False, True), (False, True, True)],
                         ids=["temp-removed", "keep", "existing-workdir-kept"])
def test_demo_removes_what_it_created_unless_keep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool,
                                                  exists: bool, left: bool) -> None:
    from conditioning import _demo

    monkeypatch.setattr(_demo, "_run", _stub)
    work = tmp_path / "w"
    if exists:
        work.mkdir()
    r = _demo.run_demo(work, keep=keep, say=lambda s: None)
    assert r["ok"] and work.exists() == left and r["removed"] == (not left)


def test_the_demo_workdir_is_removed_when_a_step_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from conditioning import _demo

    def boom(work: Path, db_url: str, say: Any) -> dict[str, Any]:
        (work / "half-made").write_text("x")
        raise RuntimeError("step failed")

    monkeypatch.setattr(_demo, "_run", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        _demo.run_demo(None, say=lambda s: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_leaves_the_temp_folder_empty(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The real demo, once: every step ok, and afterwards its registry answers the readable
    commands (provenance verify, usage with the output digest, show with the last use)."""
    import tempfile

    for var in ("CAMEO_HOME", "CAMEO_DATABASE_URL", "CAMEO_KEK", "CAMEO_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    res = run("demo", "--local", "--keep")
    assert "[FAIL]" not in res.stdout and "[ok] audit verify (end)" in res.stdout
    [work] = list(temp.iterdir())  # nothing else was left in the temp folder
    home = work / "home"
    [png] = list((work / "out1").glob("*.png"))
    prov = run("provenance", "verify", str(png), "--home", str(home)).stdout
    assert re.search(r"^\s+cameos\s+cam_", prov, re.M) and re.search(r"^\s+tokens\s+tok_", prov, re.M)
    usage = run_json("usage", "carol", "--home", str(home))
    [out] = [e for e in usage["entries"] if e["event"] == "gate:output"]
    assert out["grantee"] == "bob" and out["outputs"][0].startswith("sha256:")
    assert run_json("show", "carol", "--home", str(home))["last_used"] is not None

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp2"))
    (tmp_path / "tmp2").mkdir()
    from conditioning import _demo

    monkeypatch.setattr(_demo, "_run", _stub)
    run("demo", "--local")
    assert list((tmp_path / "tmp2").iterdir()) == []


@pytest.mark.slow
def test_the_service_demo_runs_every_party_in_its_own_home_through_a_server(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`cameo demo` (the main job): a server on a free loopback port, five homes; every step ok,
    each party named, the server stopped and the temp folder left empty."""
    import tempfile

    for var in ("CAMEO_HOME", "CAMEO_DATABASE_URL", "CAMEO_KEK", "CAMEO_PASSPHRASE", "CAMEO_SERVER"):
        monkeypatch.delenv(var, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    res = run_json("demo")
    assert res["ok"] and res["removed"], [s for s in res["steps"] if not s["ok"]]
    parties = {s["party"] for s in res["steps"]}
    assert {"registry", "alice", "bob", "carol", "generator", "anyone"} <= parties
    names = {s["step"] for s in res["steps"]}
    assert {"revocation wins", "screening", "single use", "proofs", "holds no party key"} <= names
    assert list(temp.iterdir()) == []


# -- 6. the README tour runs as written ---------------------------------------------------------------------------
def _tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A quick tour"):]
    return section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]


def test_the_readme_tour_explains_the_request_file_the_token_and_the_passphrase() -> None:
    tour = _tour()
    assert "CAMEO_PASSPHRASE" in tour and "8" in tour
    assert "req.json" in tour.split("cameo token", 1)[0], "the request file is made before it is used"
    assert re.search(r"^T=\$\(cameo token ", tour, re.M), "the tour shows how $T is set"


@pytest.mark.slow
def test_the_readme_tour_runs_top_to_bottom(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMEO_")}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = "set -euo pipefail\n" + _tour()
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    assert "allowed" in res.stdout and "audit log intact" in res.stdout
