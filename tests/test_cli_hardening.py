"""Holes a red team found (issue 8), each pinned by a test that fails on the code before the fix.

- voice recorded below 16 kHz is refused (exit 2, ``SampleRateTooLow`` naming the file and its rate)
  at enrollment, in ``match`` and in a video's sound track: upsampling adds nothing never recorded;
- tokens need not travel in argv: ``--token-file PATH`` (``-`` = stdin) for ``generate`` and
  ``check``, bounded (a token at most 4096 characters, a few tokens, a regular file or stdin);
- the SQLite database (and its ``-journal``) is created 0600 whatever the umask, and ``cameo init``
  narrows an existing one;
- exit codes and ``--json`` on every path: a missing file for ``provenance verify`` is bad input (2),
  an unknown ``--grant`` for ``token`` is not found (4), and click's usage errors under ``--json``
  print one JSON object and exit 2.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import GENERATOR, Registry, dir_listing, dump_tables
from typer.testing import CliRunner

from cameo import MediaError, SampleRateTooLow
from cameo.biometrics._media import SAMPLE_RATE, load_audio, load_video, resample
from cli import MAX_TOKEN_CHARS, MAX_TOKENS, app

RUNNER = CliRunner()
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Cli:
    def __init__(self, r: Registry, workdir: Path) -> None:
        self.r = r
        self.dir = workdir

    def __call__(self, *args: Any, code: int | None = 0, input: str | None = None) -> Any:
        res = RUNNER.invoke(app, [str(a) for a in args], input=input)
        if code is not None:
            assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr, res.exception)
        assert "Traceback" not in res.stdout + res.stderr
        return res

    def json(self, *args: Any, code: int = 0, input: str | None = None) -> dict[str, Any]:
        return one_json_object(self(*args, "--json", code=code, input=input).stdout)

    def token(self, request: str = "req.json", owner: str = "alice") -> str:
        return self.json("token", owner, "--as", "bob", "--generator", GENERATOR, "--request", request)["token"]

    def state(self) -> tuple[Any, Any]:
        files = {k: v for k, v in dir_listing(self.r.home.path).items()
                 if not k.startswith("cameo.db") and not k.endswith((".json", ".wav", ".txt", ".mp4"))}
        return dump_tables(self.r.engine), files


def one_json_object(stdout: str) -> dict[str, Any]:
    text = stdout.strip()
    assert text, "nothing on stdout"
    obj = json.loads(text)  # one document: trailing text would fail here
    assert isinstance(obj, dict), obj
    return obj


def _vec(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4")


@pytest.fixture
def cli(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """alice and carol enrolled (synthetic templates), each with a grant to bob; a request in the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "req.json").write_text(json.dumps({"prompt": "a wave", "params": {"seconds": 2}}))
    c = Cli(registry, tmp_path)
    for i, who in enumerate(("alice", "carol")):
        registry.enroll(who, {"face": _vec(i, 128), "voice": _vec(i + 10, 256)})
        c.json("grant", who, "--to", "bob", "--generator", GENERATOR, "--uses", "20")
    return c


# -- 1. voice below 16 kHz ----------------------------------------------------------------------------
def _speechlike(sr: int, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("sr", [2000, 8000, 11025, 15999])
def test_audio_recorded_below_16k_is_refused_naming_file_and_rate(tmp_path: Path, sr: int) -> None:
    p = tmp_path / f"low_{sr}.wav"
    sf.write(p, _speechlike(sr), sr)
    with pytest.raises(SampleRateTooLow) as ei:
        load_audio(p)
    e = ei.value
    assert isinstance(e, MediaError) and e.exit_code == 2 and e.source == p.name
    assert p.name in str(e) and f"{sr} Hz" in str(e) and "16000" in str(e)


@pytest.mark.parametrize("sr", [16000, 22050, 48000])
def test_audio_at_16k_or_above_still_loads(tmp_path: Path, sr: int) -> None:
    p = tmp_path / f"ok_{sr}.wav"
    sf.write(p, _speechlike(sr, 1.0), sr)
    assert abs(len(load_audio(p)) - SAMPLE_RATE) <= 2


def _video_with_audio(path: Path, audio_rate: int, seconds: float = 1.0) -> None:
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        aus = c.add_stream("aac", rate=audio_rate)
        aus.layout = "mono"
        for i in range(int(10 * seconds)):
            img = np.full((64, 64, 3), 20 * i % 255, np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        x = _speechlike(audio_rate, seconds)
        n = aus.codec_context.frame_size or 1024
        for k in range(0, len(x) - n + 1, n):
            fr = av.AudioFrame.from_ndarray(x[None, k:k + n], format="flt", layout="mono")
            fr.sample_rate, fr.pts = audio_rate, k
            for pkt in aus.encode(fr):
                c.mux(pkt)
        for s in (vs, aus):
            for pkt in s.encode(None):
                c.mux(pkt)


def test_a_video_sound_track_below_16k_is_refused(tmp_path: Path) -> None:
    low, ok = tmp_path / "low.mp4", tmp_path / "ok.mp4"
    _video_with_audio(low, 8000)
    _video_with_audio(ok, 16000)
    with pytest.raises(SampleRateTooLow, match=r"low\.mp4.*8000 Hz"):
        load_video(low)
    with pytest.raises(SampleRateTooLow, match="8000 Hz"):
        load_audio(low)
    assert load_video(low, with_audio=False).audio is None  # the frames alone are fine
    assert load_video(ok).audio is not None


def _low_rate_copies(data_dir: Path, tmp_path: Path, sr: int, speaker: str = "ls_2033") -> list[Path]:
    import soxr

    out = []
    for i in (1, 2):
        x, orig = sf.read(data_dir / "voices" / speaker / f"{i}.wav")
        p = tmp_path / f"v{sr}_{i}.wav"
        sf.write(p, soxr.resample(x, orig, sr), sr)
        out.append(p)
    return out


@SQLITE_ONLY
@pytest.mark.parametrize("sr", [2000, 8000])
def test_enrolling_a_voice_below_16k_exits_2_and_changes_nothing(cli: Cli, data_dir: Path, tmp_path: Path,
                                                                  sr: int) -> None:
    cli.r.account("dan")
    clips = _low_rate_copies(data_dir, tmp_path, sr)
    before = cli.state()
    out = cli.json("enroll", "dan", "--face", data_dir / "faces" / "alex_lacamoire" / "1.jpg",
                   "--voice", clips[0], "--voice", clips[1], code=2)
    assert out["error_type"] == "SampleRateTooLow" and clips[0].name in out["error"] and f"{sr} Hz" in out["error"]
    assert cli.state() == before
    res = cli("match", clips[0], code=2)
    assert "SampleRate" not in res.stdout and f"{sr} Hz" in res.stderr


def test_why_a_template_from_8k_clips_would_miss_its_own_speaker(data_dir: Path) -> None:
    """Why the refusal: clips band-limited to 8 kHz and resampled up (what resemblyzer's loader does
    silently) give a template that misses the same speaker's 16 kHz clip; the 16 kHz one matches."""
    from cameo.biometrics._voice import VOICE_MATCH_THRESHOLD
    from cameo.biometrics._pipeline import ResemblyzerVoiceEncoder

    enc = ResemblyzerVoiceEncoder()
    clips = [load_audio(data_dir / "voices" / "ls_3080" / f"{i}.wav") for i in (1, 2, 3)]

    def template(xs: list[np.ndarray]) -> np.ndarray:
        m = np.mean([enc.embed(x) for x in xs], axis=0)
        return m / np.linalg.norm(m)

    narrow = [resample(resample(x, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE) for x in clips[:2]]
    probe = enc.embed(clips[2])
    assert enc.similarity(template(clips[:2]), probe) >= VOICE_MATCH_THRESHOLD
    assert enc.similarity(template(narrow), probe) < VOICE_MATCH_THRESHOLD - 0.05  # measured 0.74


# -- 2. tokens off argv -------------------------------------------------------------------------------
@SQLITE_ONLY
def test_generate_reads_the_token_from_stdin(cli: Cli) -> None:
    tok = cli.token()
    out = cli.json("generate", "--request", "req.json", "--token-file", "-", "--generator", GENERATOR,
                   "--out", "o_stdin", input=tok + "\n")
    assert out["outputs"] and (cli.dir / "o_stdin").is_dir()


@SQLITE_ONLY
def test_check_reads_tokens_from_a_file_blank_lines_ignored_and_with_token(cli: Cli) -> None:
    t1, t2 = cli.token(), cli.token(owner="carol")
    f = cli.dir / "tokens.txt"
    f.write_text(f"\n  {t1}  \r\n\n")
    out = cli.json("check", "--token-file", f, "--generator", GENERATOR, "--request", "req.json")
    assert out["allowed"] is True and len(out["tokens"]) == 1
    out = cli.json("check", "--token", t2, "--token-file", f, "--generator", GENERATOR, "--request", "req.json")
    assert out["allowed"] is True and len(out["tokens"]) == 2
    f.write_text(f"{t1}\n\n{t2}\n")
    out = cli.json("check", "--token-file", f, "--generator", GENERATOR, "--request", "req.json")
    assert out["allowed"] is True and len(out["tokens"]) == 2


@SQLITE_ONLY
def test_the_token_option_is_still_accepted(cli: Cli) -> None:
    out = cli.json("check", "--token", cli.token(), "--generator", GENERATOR, "--request", "req.json")
    assert out["allowed"] is True


def _bad_token_files(d: Path) -> list[Any]:
    (d / "empty.txt").write_text("\n\n   \n")
    (d / "long.txt").write_text("v4.public." + "A" * MAX_TOKEN_CHARS + "\n")
    (d / "many.txt").write_text("\n".join(f"v4.public.t{i}" for i in range(MAX_TOKENS + 1)))
    (d / "binary.txt").write_bytes(b"v4.public.\xff\xfe\x00\n")
    (d / "huge.txt").write_bytes(b"x" * 10_000_000)
    (d / "adir").mkdir()
    os.mkfifo(d / "fifo.txt")
    return ["empty.txt", "long.txt", "many.txt", "binary.txt", "huge.txt", "adir", "fifo.txt", "missing.txt",
            "/dev/zero"]


@SQLITE_ONLY
@pytest.mark.parametrize("command", ["check", "generate"])
def test_bad_token_files_exit_2_consume_nothing_and_echo_no_token(cli: Cli, command: str) -> None:
    tok = cli.token()
    before = cli.state()
    for name in _bad_token_files(cli.dir):
        args: list[Any] = [command, "--token-file", name, "--generator", GENERATOR, "--request", "req.json"]
        if command == "generate":
            args += ["--out", "o_bad"]
        out = cli.json(*args, code=2)
        assert out["ok"] is False and out["error"] and len(out["error"]) < 300, (name, out)
        assert "A" * 100 not in out["error"] and "v4.public" not in out["error"]
        assert not (cli.dir / "o_bad").exists()
    assert cli.state() == before
    # no token at all, from neither source; and an oversized one on the command line
    out = cli.json(command, "--generator", GENERATOR, "--request", "req.json", *(["--out", "o"] if command ==
                   "generate" else []), code=2)
    assert "--token-file" in out["error"]
    res = cli(command, "--token", "v4.public." + "A" * MAX_TOKEN_CHARS, "--generator", GENERATOR, "--request",
              "req.json", *(["--out", "o"] if command == "generate" else []), code=2)
    assert "4096" in res.stderr and "A" * 100 not in res.stderr
    assert cli.state() == before
    assert cli.json("check", "--token", tok, "--generator", GENERATOR, "--request", "req.json")["allowed"]


@SQLITE_ONLY
def test_stdin_token_file_is_bounded(cli: Cli) -> None:
    out = cli.json("check", "--token-file", "-", "--generator", GENERATOR, "--request", "req.json",
                   input="x" * 1_000_000, code=2)
    assert "bytes" in out["error"]


# -- 3. a 0600 database --------------------------------------------------------------------------------
@pytest.fixture
def umask_022() -> Any:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_init_creates_the_sqlite_database_and_its_journal_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               umask_022: None) -> None:
    from conftest import forget_engine

    from cameo.registry._db import make_engine

    home = tmp_path / "h"
    monkeypatch.setenv("CAMEO_HOME", str(home))
    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    url = f"sqlite:///{home / 'cameo.db'}"
    try:
        assert RUNNER.invoke(app, ["init", "--json"]).exit_code == 0
        db = home / "cameo.db"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        eng = make_engine(url)  # a second engine, as another process would open it
        try:
            with eng.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE scratch (x)")
                conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
                journal = home / "cameo.db-journal"
                assert journal.exists(), "a write transaction in DELETE journal mode has a journal"
                assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        finally:
            eng.dispose()
    finally:
        forget_engine(url)


def test_a_fresh_engine_creates_the_file_0600(tmp_path: Path, umask_022: None) -> None:
    from cameo.registry._db import make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        eng.dispose()
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600


def test_init_narrows_an_existing_world_readable_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import forget_engine

    home = tmp_path / "h"
    monkeypatch.setenv("CAMEO_HOME", str(home))
    monkeypatch.delenv("CAMEO_DATABASE_URL", raising=False)
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    try:
        assert RUNNER.invoke(app, ["init"]).exit_code == 0
        (home / "cameo.db").chmod(0o644)
        assert RUNNER.invoke(app, ["init"]).exit_code == 0
        assert stat.S_IMODE((home / "cameo.db").stat().st_mode) == 0o600
    finally:
        forget_engine(f"sqlite:///{home / 'cameo.db'}")


# -- 4. exit codes and --json on every path ------------------------------------------------------------
@SQLITE_ONLY
def test_provenance_verify_of_a_missing_or_odd_file_is_bad_input(cli: Cli) -> None:
    (cli.dir / "adir").mkdir()
    for name in ("missing.png", "adir", "/dev/null"):
        out = cli.json("provenance", "verify", name, code=2)
        assert out["ok"] is False and out["exit_code"] == 2 and "no such file" in out["error"]
        res = cli("provenance", "verify", name, code=2)
        assert "no such file" in res.stderr


@SQLITE_ONLY
def test_token_with_an_unknown_or_foreign_grant_is_not_found(cli: Cli) -> None:
    to_carol = cli.json("grant", "alice", "--to", "carol", "--generator", GENERATOR)["grant_id"]
    carols = cli.json("grants", "carol")["grants"][0]["id"]  # carol -> bob: not alice's
    before = cli.state()
    for gid in ("grant_nope", to_carol, carols, "x" * 500):
        out = cli.json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json",
                       "--grant", gid, code=4)
        assert out["error_type"] == "UnknownGrant" and out["error"].startswith("no grant ")
        assert len(out["error"]) < 200
    res = cli("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json",
              "--grant", "grant_nope", code=4)
    assert "no grant" in res.stderr
    assert cli.state() == before, "an unknown grant changed the registry (or was audited as a denial)"
    # the grant itself, named, still mints
    mine = next(g["id"] for g in cli.json("grants", "alice")["grants"] if g["grantee"] == "bob")
    assert cli.json("token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json",
                    "--grant", mine)["grant_id"] == mine


USAGE_ERRORS = [
    pytest.param(["grant", "alice", "--to", "bob"], "--generator", id="missing-option"),
    pytest.param(["grant", "alice", "--to", "bob", "--generator", GENERATOR, "--uses", "many"], "--uses",
                 id="bad-value"),
    pytest.param(["grant", "alice", "--to", "bob", "--generator", GENERATOR, "--frobnicate"], "--frobnicate",
                 id="unknown-option"),
    pytest.param(["nonsense"], "nonsense", id="unknown-command"),
    pytest.param(["account", "nonsense"], "nonsense", id="unknown-subcommand"),
    pytest.param(["grants"], "OWNER", id="missing-argument"),
    pytest.param(["usage", "alice", "bob"], "bob", id="extra-argument"),
    pytest.param(["generate", "--request", "req.json", "--generator", GENERATOR], "--out", id="generate-no-out"),
    pytest.param(["enroll", "alice", "--adult", "maybe"], "maybe", id="flag-with-value"),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("args", "named"), USAGE_ERRORS)
def test_usage_errors_under_json_print_one_json_object_and_exit_2(cli: Cli, args: list[str], named: str) -> None:
    before = cli.state()
    out = cli(*args, "--json", code=2)
    obj = one_json_object(out.stdout)
    assert set(obj) == {"ok", "error", "exit_code"} and obj["ok"] is False and obj["exit_code"] == 2
    assert named.lower() in obj["error"].lower() or named.upper() in obj["error"], obj
    # without --json: click's own message on stderr, nothing on stdout
    plain = cli(*args, code=2)
    assert plain.stdout.strip() == "" and plain.stderr.strip()
    assert cli.state() == before


@SQLITE_ONLY
def test_help_and_typer_exit_codes_are_kept_under_json(cli: Cli) -> None:
    for args in (["--help"], ["grant", "--help"], ["grant", "--help", "--json"], ["provenance", "--help"]):
        res = cli(*args)
        assert "Usage" in res.stdout
    res = cli(code=None)  # no arguments: the help (click's no_args_is_help, exit 2), as before
    assert res.exit_code == 2 and "Usage" in res.stdout + res.stderr
    # a denial (typer.Exit(3)) and an error of ours (exit 4) keep their codes and one JSON object
    out = cli.json("check", "--token", "v4.public.nope", "--generator", GENERATOR, "--request", "req.json", code=3)
    assert out["allowed"] is False
    assert cli.json("usage", "mallory", code=4)["exit_code"] == 4
    assert cli.json("audit", "verify")["ok"] is True


@SQLITE_ONLY
def test_main_maps_usage_errors_under_json(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The installed entry point (``cli.main``) goes through the same mapping."""
    import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["cameo", "grant", "alice", "--to", "bob", "--json"])
    with pytest.raises(SystemExit) as ei:
        cli_module.main()
    assert ei.value.code == 2
    obj = one_json_object(capsys.readouterr().out)
    assert obj["exit_code"] == 2 and "--generator" in obj["error"]
    monkeypatch.setattr(sys, "argv", ["cameo", "usage", "alice", "--json"])
    with pytest.raises(SystemExit) as ei:
        cli_module.main()
    assert ei.value.code in (0, None)
    assert one_json_object(capsys.readouterr().out)["handle"] == "alice"
