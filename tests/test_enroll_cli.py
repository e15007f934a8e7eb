"""`cameo enroll / show / match / delete / protect / retention run` through typer's CliRunner, on
real media and a real SQLite registry.

The contract checked: exit 0 ok, 2 bad input, 3 refused (another cameo's or a protected likeness,
a failed liveness check), 4 not found; ``--json`` prints one JSON object naming the error type; a
refused or bad enrollment leaves every row of every table and every file of the home (the database
file included, byte for byte) unchanged.

The CLI turns ``--face a.jpg b.jpg`` into repeated options in ``main()``; CliRunner calls the typer
app directly, so the arguments go through :func:`cli.expand_multi` here, as ``main()`` does.
Test media come from ``CAMEO_TEST_DATA`` (default ``../shared/data``) via the ``data_dir`` fixture.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app, expand_multi

RUNNER = CliRunner()
PASS = "secret-pass-1"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ENV = ("CAMEO_DATABASE_URL", "CAMEO_KEK", "CAMEO_FACE_MODEL", "CAMEO_DEBUG")

pytestmark = pytest.mark.data


# -- plumbing -------------------------------------------------------------------------------------------------
def _home(path: Path) -> Any:
    from cameo.registry._home import Home

    return Home.resolve(path, f"sqlite:///{path / 'cameo.db'}")


def _forget(home: Any) -> None:
    from cameo.registry import _app
    eng = _app._ENGINES.pop(home.db_url, None)
    if eng is not None:
        eng.dispose()


def _dump(home: Any) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import select

    from cameo.registry import _app
    from cameo.registry._models import Base

    out = {}
    with _app.engine_for(home).connect() as conn:
        for t in Base.metadata.sorted_tables:
            rows = conn.execute(select(t).order_by(*t.primary_key.columns)).all()
            out[t.name] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return out


def _files(home: Any) -> dict[str, str]:
    return {str(p.relative_to(home.path)): hashlib.sha256(p.read_bytes()).hexdigest() + f" {p.stat().st_mode:o}"
            for p in sorted(home.path.rglob("*")) if p.is_file()}


def _one_json(stdout: str) -> dict[str, Any]:
    obj = json.loads(stdout.strip())  # exactly one document: trailing text fails here
    assert isinstance(obj, dict)
    return obj


def _numeric_lists(obj: Any) -> int:
    if isinstance(obj, dict):
        return sum(_numeric_lists(v) for v in obj.values())
    if isinstance(obj, list):
        flat = len(obj) >= 16 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj)
        return int(flat) + sum(_numeric_lists(v) for v in obj)
    return 0


@dataclass
class Cli:
    home: Any
    data: Path

    def __call__(self, *args: str, code: int | None = 0, env: dict[str, str | None] | None = None) -> Any:
        argv = [str(self.data / a[5:]) if a.startswith("data:") else a for a in args]
        res = RUNNER.invoke(app, expand_multi(argv), env=env)
        if code is not None:
            assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr, res.exception)
        assert "Traceback" not in res.stdout + res.stderr
        assert PASS not in res.stdout + res.stderr
        return res

    def json(self, *args: str, code: int = 0, env: dict[str, str | None] | None = None) -> dict[str, Any]:
        return _one_json(self(*args, "--json", code=code, env=env).stdout)

    def state(self) -> tuple[Any, Any]:
        return _dump(self.home), _files(self.home)


CAROL = ("enroll", "carol", "--face", "data:faces/obama/1.jpg", "data:faces/obama/2.jpg",
         "--voice", "data:voices/ls_1688/1.wav", "data:voices/ls_1688/2.wav", "--restriction", "no political content")


@pytest.fixture(scope="module")
def enrolled(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A registry (library init and accounts carol, gina) where carol enrolled through the CLI."""
    from cameo.registry import _app
    home = _home(tmp_path_factory.mktemp("cli-enrolled") / "home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV:
            mp.delenv(var, raising=False)
        mp.setenv("CAMEO_HOME", str(home.path))
        mp.setenv("CAMEO_PASSPHRASE", PASS)
        _app.init(home, now=NOW)
        for h in ("carol", "gina"):
            _app.account_create(home, h, PASS, now=NOW)
        out = Cli(home, data_dir).json(*CAROL)
        _forget(home)
    yield home, out


@pytest.fixture
def cli(enrolled: tuple[Any, dict[str, Any]], data_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """A private copy of the enrolled registry; CAMEO_HOME points at it, CAMEO_PASSPHRASE is set."""
    home = _home(tmp_path / "home")
    shutil.copytree(enrolled[0].path, home.path)
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAMEO_HOME", str(home.path))
    monkeypatch.setenv("CAMEO_PASSPHRASE", PASS)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.jpg").write_bytes((data_dir / "faces/alex_lacamoire/1.jpg").read_bytes()[:1500])
    (tmp_path / "notes.txt").write_text("not media")
    yield Cli(home, data_dir)
    _forget(home)


# -- expand_multi ----------------------------------------------------------------------------------------------
def test_expand_multi_makes_word_lists_repeated_options() -> None:
    argv = ["enroll", "carol", "--face", "a.jpg", "b.jpg", "c.jpg", "--voice", "x.wav", "y.wav", "--json"]
    assert expand_multi(argv) == ["enroll", "carol", "--face", "a.jpg", "--face", "b.jpg", "--face", "c.jpg",
                                  "--voice", "x.wav", "--voice", "y.wav", "--json"]
    assert expand_multi(["match", "p.jpg", "--json"]) == ["match", "p.jpg", "--json"]
    assert expand_multi(["enroll", "c", "--video", "v.mp4", "--face", "a"]) == ["enroll", "c", "--video", "v.mp4",
                                                                                  "--face", "a"]


# -- the happy path ---------------------------------------------------------------------------------------------
def test_enroll_show_match_delete(cli: Cli, enrolled: tuple[Any, dict[str, Any]]) -> None:
    out = enrolled[1]
    assert out["handle"] == "carol" and out["modalities"] == ["face", "voice"]
    assert out["restrictions"] == ["no political content"]
    assert [(t["modality"], t["samples"]) for t in out["templates"]] == [("face", 2), ("voice", 2)]
    assert _numeric_lists(out) == 0

    shown = cli.json("show", "carol")
    assert shown["cameo_id"] == out["cameo_id"] and shown["consent"]["digest"] == out["consent_digest"]
    assert shown["consent"]["adult_attested"] is True and shown["status"] == "active"
    assert _numeric_lists(shown) == 0, "show never prints an embedding"
    text = cli("show", "carol").stdout
    assert "carol (active)" in text and "no political content" in text

    m = cli.json("match", "data:faces/obama/3.jpg")
    assert m["matches"] == ["carol"] and m["faces"][0]["matches"][0]["score"] < m["faces"][0]["threshold"]
    assert cli.json("match", "data:voices/ls_1688/3.wav")["matches"] == ["carol"]
    other = cli.json("match", "data:faces/lin_manuel_miranda/1.jpg")
    assert other["matched"] is False and other["faces"][0]["best_score"] > 0.6
    assert "no match" in cli("match", "data:faces/biden/1.jpg").stdout
    nobody = cli.json("match", "data:faces/_noface/dogs.jpg")
    assert nobody["faces"] == [] and nobody["matched"] is False
    assert "no face or voice found" in cli("match", "data:faces/_noface/dogs.jpg").stdout

    d = cli.json("delete", "carol")
    assert d["cameo_id"] == out["cameo_id"] and d["templates_destroyed"] == 2
    assert cli.json("match", "data:faces/obama/3.jpg")["matched"] is False
    assert cli.json("match", "data:voices/ls_1688/3.wav")["matched"] is False
    assert cli.json("show", "carol", code=4)["error_type"] == "NotEnrolled"
    assert cli.json("delete", "carol", code=4)["error_type"] == "NotEnrolled"
    # the face is nobody's now: gina may enroll it
    assert cli.json("enroll", "gina", "--face", "data:faces/obama/3.jpg")["modalities"] == ["face"]


def test_enroll_reports_progress_on_stderr_a_line_per_stage(cli: Cli) -> None:
    """stderr is not a terminal here: one plain line per stage, on stderr only, under --json too."""
    before = cli.state()
    res = cli("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "data:faces/alex_lacamoire/2.jpg",
              "--voice", "data:voices/ls_2033/1.wav", "data:voices/ls_2033/2.wav", "--json")
    assert _one_json(res.stdout)["modalities"] == ["face", "voice"], "stdout is one JSON object"
    assert res.stderr.splitlines() == ["enroll: embedding faces (2 photos)", "enroll: embedding voice clips (2 clips)"]
    assert cli.state() != before
    m = cli("match", "data:faces/alex_lacamoire/3.jpg")
    assert "gina" in m.stdout and "match:" not in m.stdout
    assert m.stderr.splitlines()[0] == "match: looking for faces and voices in 3.jpg"
    p = cli("protect", "estate-of-jb", "--face", "data:faces/biden/1.jpg")
    assert p.stdout.strip() == "protected estate-of-jb"
    assert p.stderr.splitlines() == ["protect: embedding samples (1 photo(s), 0 clip(s))",
                                     "protect: checking the registry and signing the protected entries"]


def test_retention_run_keeps_a_fresh_cameo(cli: Cli) -> None:
    before = cli.state()
    assert cli.json("retention", "run", "--dry-run")["due"] == []
    out = cli.json("retention", "run", "--max-idle-days", "1")
    assert out["deleted"] == [] and out["max_idle_days"] == 1
    assert cli.state()[0]["cameos"] == before[0]["cameos"]
    assert cli.json("show", "carol")["status"] == "active"


# -- refusals (exit 3) and bad input (exit 2 / 4): nothing changes ---------------------------------------------
REFUSED = [
    (("enroll", "gina", "--face", "data:faces/obama/3.jpg", "data:faces/_edge/obama_partial_face.jpg"),
     "IdentityConflict"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--voice", "data:voices/ls_1688/3.wav"),
     "IdentityConflict"),
    pytest.param(("enroll", "gina", "--video", "data:videos/still_photo.mp4"), "LivenessFailed",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("args", "error"), REFUSED, ids=["face-of-carol", "voice-of-carol", "still-photo-video"])
def test_refused_enrollment_exits_3_and_changes_nothing(cli: Cli, args: tuple[str, ...], error: str) -> None:
    before = cli.state()
    out = cli.json(*args, code=3)
    assert out["ok"] is False and out["exit_code"] == 3 and out["error_type"] == error
    assert "carol" not in out["error"], "a refusal does not say whose likeness it is"
    assert cli.state() == before, "a refused enrollment changed the registry"
    res = cli(*args, code=3)  # and in plain text: progress, then a short message on stderr; nothing on stdout
    *progress, last = res.stderr.strip().splitlines()
    assert res.stdout == "" and last.startswith("error: ") and len(last) < 1000
    assert all(line.startswith("enroll: ") for line in progress)
    assert cli.state() == before


def test_protected_likeness_is_refused(cli: Cli) -> None:
    out = cli.json("protect", "estate-of-jb", "--face", "data:faces/biden/1.jpg",
                   "--voice", "data:voices/ls_2033/1.wav", "data:voices/ls_2033/2.wav")
    assert out["label"] == "estate-of-jb" and len(out["entries"]) == 2
    m = cli.json("match", "data:faces/biden/2.jpg")
    assert m["matches"] == ["estate-of-jb"] and m["faces"][0]["matches"][0]["kind"] == "protected"
    before = cli.state()
    for args in (("enroll", "gina", "--face", "data:faces/biden/2.jpg"),
                 ("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--voice", "data:voices/ls_2033/3.wav")):
        err = cli.json(*args, code=3)
        assert err["error_type"] == "ProtectedIdentity"
    assert cli.state() == before


BAD = [
    (("enroll", "gina", "--face", "data:faces/_noface/dogs.jpg"), 2, "NoFaceFound"),
    (("enroll", "gina", "--face", "data:faces/_multi/kit_rose.jpg"), 2, "MultipleFaces"),
    (("enroll", "gina", "--face", "data:faces/_multi/biden_obama_bystander.jpg"), 2, "MultipleFaces"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--voice", "data:voices/_bad/silence_3s.wav"),
     2, "SilentAudio"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--voice", "data:voices/_bad/noise_3s.wav"),
     2, "NoiseOnly"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--voice", "data:voices/_bad/short_0.3s.wav"),
     2, "TooLittleSpeech"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "data:faces/biden/1.jpg"), 2,
     "InconsistentIdentity"),
    (("enroll", "gina", "--face", "corrupt.jpg"), 2, "MediaError"),
    (("enroll", "gina", "--face", "missing.jpg"), 2, "MediaError"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--no-adult"), 2, "AgeNotAttested"),
    (("enroll", "gina"), 2, "BadInput"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--video", "data:videos/splice.mp4"), 2,
     "BadInput"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--audience", "world"), 2, "BadInput"),
    (("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--expires", "soon"), 2, "InvalidDuration"),
    (("enroll", "carol", "--face", "data:faces/obama/3.jpg"), 2, "AlreadyEnrolled"),
    (("enroll", "nobody", "--face", "data:faces/alex_lacamoire/1.jpg"), 4, "UnknownAccount"),
    (("enroll", "Gina!", "--face", "data:faces/alex_lacamoire/1.jpg"), 2, "InvalidHandle"),
    (("show", "gina"), 4, "NotEnrolled"),
    (("show", "nobody"), 4, "UnknownAccount"),
    (("delete", "gina"), 4, "NotEnrolled"),
    (("delete", "nobody"), 4, "UnknownAccount"),
    (("match", "missing.jpg"), 2, "MediaError"),
    (("match", "notes.txt"), 2, "MediaError"),
    (("match", "corrupt.jpg"), 2, "MediaError"),
    (("protect", "nothing"), 2, "BadInput"),
    (("retention", "run", "--max-idle-days", "0"), 2, "BadInput"),
]


@pytest.mark.parametrize(("args", "code", "error"), BAD,
                         ids=[f"{i:02d}-{a[0]}-{e}" for i, (a, _, e) in enumerate(BAD)])
def test_bad_input_exits_2_or_4_and_changes_nothing(cli: Cli, args: tuple[str, ...], code: int, error: str) -> None:
    before = cli.state()
    out = cli.json(*args, code=code)
    assert out["ok"] is False and out["exit_code"] == code and out["error_type"] == error, out
    assert out["error"] and len(out["error"]) < 500
    assert cli.state() == before, "bad input changed the registry"


def test_wrong_passphrase_exits_2_and_changes_nothing(cli: Cli) -> None:
    before = cli.state()
    env = {"CAMEO_PASSPHRASE": "not-the-pass"}
    assert cli.json("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", code=2, env=env)["error_type"] \
        == "WrongPassphrase"
    assert cli.json("delete", "carol", code=2, env=env)["error_type"] == "WrongPassphrase"
    assert cli.state() == before
    assert cli.json("match", "data:faces/obama/3.jpg")["matches"] == ["carol"]


def test_click_rejects_an_unknown_purpose_before_anything(cli: Cli) -> None:
    before = cli.state()
    res = cli("enroll", "gina", "--face", "data:faces/alex_lacamoire/1.jpg", "--purpose", "train", code=2)
    assert "--purpose" in res.stderr
    assert cli.state() == before
