"""Requests and their references are read once, bounded, and what was digested is what goes on.

- the request file and every reference must be a regular file: ``/dev/zero``, ``/dev/urandom``, a
  FIFO nobody writes to, a directory are refused at once (typed ``InvalidRequest``, exit 2), never
  read forever; sizes are capped (1 MiB a request file, 64 MiB a reference);
- a reference is media by its bytes or it is refused;
- the bytes screened and handed to the generator are the bytes the digest covers, even when the
  file is replaced right after the request was loaded (Linux: ``os.replace``);
- generation stages in ``CAMEO_HOME/staging/<pid>-<random>`` (0700), and removes the folders of
  dead processes;
- every parameter an adapter reads is validated before the gate consumes a use.

Synthetic templates (as test_generate_cli.py): no test media needed; real SQLite, real gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import GENERATOR, Registry

from cameo._errors import InvalidRequest
from cameo._request import MAX_REFERENCE_BYTES, MAX_REQUEST_BYTES, GenerationRequest
from conditioning._errors import AdapterMismatch, AdapterUnavailable

sqlite = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux devices and FIFOs")


def _png(path: Path, colour: tuple[int, int, int] = (40, 80, 120), size: int = 48) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), colour).save(path, format="PNG")
    return path


def _request_file(folder: Path, refs: list[str], params: dict[str, Any] | None = None) -> Path:
    path = folder / "req.json"
    path.write_text(json.dumps({"prompt": "a portrait", "params": params or {}, "references": refs}))
    return path


def _refused_fast(call: Any, match: str) -> InvalidRequest:
    start = time.monotonic()
    with pytest.raises(InvalidRequest, match=match) as e:
        call()
    assert time.monotonic() - start < 2.0
    assert e.value.exit_code == 2
    return e.value


# -- bounded reading (no registry needed) -----------------------------------------------------------
@linux
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_a_reference_is_refused_at_once(tmp_path, device):
    req = _request_file(tmp_path, [device])
    err = _refused_fast(lambda: GenerationRequest.load(req), "not a regular file")
    assert Path(device).name in str(err) and device not in str(err)  # the name, not the path


@linux
def test_a_fifo_nobody_writes_to_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    req = _request_file(tmp_path, ["fifo.jpg"])
    _refused_fast(lambda: GenerationRequest.load(req), "fifo.jpg is not a regular file")
    _refused_fast(lambda: GenerationRequest.load(tmp_path / "fifo.jpg"), "request file fifo.jpg is not a regular file")


@linux
def test_dev_zero_as_the_request_file_is_refused_without_reading_it(tmp_path):
    _refused_fast(lambda: GenerationRequest.load("/dev/zero"), "request file zero is not a regular file")


def test_a_directory_as_a_reference_is_refused(tmp_path):
    (tmp_path / "pics").mkdir()
    _refused_fast(lambda: GenerationRequest.load(_request_file(tmp_path, ["pics"])), "pics is not a regular file")


def test_an_oversized_request_file_is_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b'{"prompt": "' + b"x" * MAX_REQUEST_BYTES + b'"}')
    _refused_fast(lambda: GenerationRequest.load(big), "larger than 1 MiB")


def test_an_oversized_reference_is_refused_before_it_is_read(tmp_path):
    ref = _png(tmp_path / "huge.png")
    with open(ref, "r+b") as f:  # sparse: the size is checked on the open file, nothing is read
        f.truncate(MAX_REFERENCE_BYTES + 1)
    _refused_fast(lambda: GenerationRequest.build("p", {}, [ref]), "huge.png is larger than 64 MiB")


def test_a_missing_reference_is_named(tmp_path):
    _refused_fast(lambda: GenerationRequest.load(_request_file(tmp_path, ["missing.jpg"])),
                  "cannot read reference missing.jpg")


@pytest.mark.parametrize("content", [b"just some text, not a picture\n", b"", b"\x00" * 100, b"%PDF-1.7\n"])
def test_a_reference_that_is_not_media_is_refused_whatever_its_name(tmp_path, content):
    ref = tmp_path / "photo.jpg"
    ref.write_bytes(content)
    _refused_fast(lambda: GenerationRequest.build("p", {}, [ref]), "photo.jpg is not a recognised image, audio or video")


def test_the_request_keeps_its_bytes_out_of_its_repr(tmp_path):
    ref = _png(tmp_path / "a.png")
    req = GenerationRequest.build("p", {"seed": 1}, [ref])
    assert req.reference_hashes == ("sha256:" + hashlib.sha256(ref.read_bytes()).hexdigest(),)
    assert "PNG" not in repr(req) and "_blobs" not in repr(req) and len(repr(req)) < 600


def test_staged_copies_are_private_and_named_by_their_bytes(tmp_path):
    data = _png(tmp_path / "x.png").read_bytes()
    (tmp_path / "x.bin").write_bytes(data)
    (tmp_path / "noext").write_bytes(data)
    req = GenerationRequest.build("p", {}, [tmp_path / "x.bin", tmp_path / "noext", tmp_path / "x.png"])
    staged = req.stage(tmp_path / "staged")
    assert [s.path.name for s in staged] == ["x.bin.png", "noext.png", "x.png"]
    assert [s.name for s in staged] == ["x.bin", "noext", "x.png"]
    assert {s.kind for s in staged} == {"image"} and {s.mime for s in staged} == {"image/png"}
    assert all(s.path.read_bytes() == data for s in staged)
    assert stat.S_IMODE((tmp_path / "staged").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(s.path.stat().st_mode) == 0o600 for s in staged)


# -- through generate ---------------------------------------------------------------------------------
class _RecordingAdapter:
    """Records what it was handed: the request's references (their bytes) and its folder."""

    name = "recording-refs"
    seen: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def validate_request(self, request: Any) -> None:
        pass

    def check(self, bundle: Any) -> None:
        pass

    def generate(self, bundle: Any, request: Any, out_dir: Path) -> list[Path]:
        refs = [Path(p) for p in request["references"]]
        self.seen.append({"refs": refs, "digests": ["sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
                                                    for p in refs],
                          "target": request["params"].get("target"), "out_dir": Path(out_dir),
                          "mode": stat.S_IMODE(Path(out_dir).parent.stat().st_mode)})
        out = Path(out_dir) / "out.png"
        _png(out, (9, 9, 9), 32)
        return [out]


class _NoValidation(_RecordingAdapter):
    name = "no-validation"
    validate_request = None  # type: ignore[assignment]


@pytest.fixture
def gen(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """alice enrolled with a synthetic face; bob holds a one-use grant of it for studio-v1 and a
    ten-use grant for the recording generator."""
    from cameo.registry import _services as reg
    from conditioning import adapters as _adapters

    r = registry
    r.enroll("alice", {"face": np.random.default_rng(1).standard_normal(128).astype("<f4")})
    monkeypatch.setitem(_adapters.ADAPTERS, _RecordingAdapter.name, _RecordingAdapter)
    monkeypatch.setitem(_adapters.ADAPTERS, _NoValidation.name, _NoValidation)
    with r.session() as s:
        reg.register_generator(s, "rec", adapter=_RecordingAdapter.name, config={}, public_key=None, now=r.now)
        reg.register_generator(s, "noval", adapter=_NoValidation.name, config={}, public_key=None, now=r.now)
    r.one_use = r.grant("alice", "bob", modalities=("face",), max_uses=1).id  # type: ignore[attr-defined]
    r.rec = r.grant("alice", "bob", modalities=("face",), generators=("rec", "noval"), max_uses=10).id  # type: ignore[attr-defined]
    _RecordingAdapter.seen.clear()
    return r


def _generate(r: Registry, request: Any, out: Path, generator: str = GENERATOR, **kw: Any) -> dict[str, Any]:
    from conditioning._generate import generate

    token = r.token("alice", "bob", request, generator=generator, **kw)
    return generate(r.home, request, [token], generator=generator, out_dir=out, now=r.now)


def _released(r: Registry) -> int:
    return sum(1 for e in r.usage("alice")["entries"] if e["event"] == "gate:release:allowed")


@sqlite
@linux
def test_the_bytes_handed_on_are_the_bytes_digested_even_after_a_swap(gen, tmp_path):
    r = gen
    ref = _png(tmp_path / "ref.png", (200, 10, 10))
    req = GenerationRequest.load(_request_file(tmp_path, ["ref.png"], {"target": "ref.png"}))
    bound = ref.read_bytes()
    _png(tmp_path / "other.png", (10, 200, 10))
    os.replace(tmp_path / "other.png", ref)  # right after the digest was read
    assert ref.read_bytes() != bound
    _generate(r, req, tmp_path / "out", generator="rec")
    (seen,) = _RecordingAdapter.seen
    assert seen["digests"] == list(req.reference_hashes)  # what the token binds, not what is there now
    staging = r.home.path / "staging"
    assert all(p.is_relative_to(staging) for p in seen["refs"]) and ref not in seen["refs"]
    assert seen["target"] == str(seen["refs"][0])  # params.target is the staged copy too
    assert seen["out_dir"].is_relative_to(staging)
    assert seen["mode"] == 0o700
    assert list(staging.iterdir()) == []  # the call's staging folder is gone


@sqlite
def test_stale_staging_folders_of_dead_processes_are_removed(gen, tmp_path):
    r = gen
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    staging = r.home.path / "staging"
    (staging / f"{dead.stdout.strip()}-0123abcd" / "outputs").mkdir(parents=True)
    (staging / f"{dead.stdout.strip()}-0123abcd" / "outputs" / "unsigned.png").write_bytes(b"x")
    live = staging / f"{os.getppid()}-live"  # a running process (pytest's parent)
    live.mkdir()
    req = GenerationRequest.build("p", {"seed": 1})
    _generate(r, req, tmp_path / "out")
    assert sorted(p.name for p in staging.iterdir()) == [live.name]


@sqlite
def test_an_invalid_seed_is_refused_before_a_use_is_consumed(gen, tmp_path):
    r = gen
    bad = GenerationRequest.build("p", {"seed": "abc"})
    before = r.dump()
    with pytest.raises(AdapterMismatch, match="seed") as e:
        _generate(r, bad, tmp_path / "bad", grant_id=r.one_use)
    assert e.value.exit_code == 2
    assert r.grant_row(r.one_use).uses == 0 and _released(r) == 0
    assert not (tmp_path / "bad").exists()
    after = r.dump()
    assert after["grants"] == before["grants"] and after["token_uses"] == before["token_uses"]
    # the one use is still there for a good request
    assert _generate(r, GenerationRequest.build("p", {"seed": 7}), tmp_path / "good", grant_id=r.one_use)["outputs"]
    assert r.grant_row(r.one_use).uses == 1


@sqlite
def test_a_target_that_is_not_a_reference_is_refused_before_a_use(gen, tmp_path):
    r = gen
    _png(tmp_path / "a.png")
    req = GenerationRequest.build("p", {"target": "elsewhere.png"}, [tmp_path / "a.png"])
    with pytest.raises(InvalidRequest, match="target"):
        _generate(r, req, tmp_path / "out", generator="rec")
    assert r.grant_row(r.rec).uses == 0


@sqlite
def test_an_adapter_that_cannot_validate_is_refused_before_a_use(gen, tmp_path):
    r = gen
    with pytest.raises(AdapterUnavailable, match="validate_request"):
        _generate(r, GenerationRequest.build("p", {}), tmp_path / "out", generator="noval")
    assert r.grant_row(r.rec).uses == 0 and _released(r) == 0


@sqlite
def test_media_that_does_not_decode_is_refused_before_a_use(gen, tmp_path):
    r = gen
    ref = tmp_path / "broken.jpg"
    ref.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)  # JPEG's magic, then nothing a decoder takes
    req = GenerationRequest.build("p", {}, [ref])
    with pytest.raises(InvalidRequest, match="broken.jpg") as e:
        _generate(r, req, tmp_path / "out", generator="rec")
    assert e.value.exit_code == 2 and r.grant_row(r.rec).uses == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("params, match", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"seed": 1 << 64}, "seed"),
])
def test_demo_validates_what_it_reads(params, match):
    from conditioning.adapters import get_adapter, validate_request

    with pytest.raises(AdapterMismatch, match=match):
        validate_request(get_adapter("demo"), {"prompt": "p", "params": params})
    validate_request(get_adapter("demo"), {"prompt": "p", "params": {"seed": 3}})


@sqlite
@linux
def test_cli_check_and_token_with_endless_inputs_exit_2_at_once(gen, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo.jpg")
    runner = CliRunner()
    for ref in ("/dev/zero", "/dev/urandom", "fifo.jpg"):
        _request_file(tmp_path, [ref])
        start = time.monotonic()
        res = runner.invoke(app, ["token", "alice", "--as", "bob", "--generator", GENERATOR, "--request", "req.json"])
        assert res.exit_code == 2 and time.monotonic() - start < 5, (ref, res.exit_code, res.stdout, res.stderr)
    start = time.monotonic()
    res = runner.invoke(app, ["check", "--token", "x", "--generator", GENERATOR, "--request", "/dev/zero"])
    assert res.exit_code == 2 and time.monotonic() - start < 5, (res.stdout, res.stderr)
