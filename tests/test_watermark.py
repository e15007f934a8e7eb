"""The watermark (issue 14): round trips, each transform at the rates bench/watermark.py reports,
pictures cameo never made, and the soft binding end to end through the CLI: a stripped output
resolves to its record, a never-made picture is not found (exit 4), a watermark copied onto other
content does not verify (exit 3), and a stripped output used as a reference still needs a remix
token. Real models, real SQLite, no mocks."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_generate_cli import SQLITE_ONLY, Cli, cli  # noqa: F401 - the fixture is used by name

from conditioning.provenance import _phash, _soft_binding, _watermark
from conditioning.provenance import SOFT_BINDING_ASSERTION

_spec = importlib.util.spec_from_file_location("bench_watermark", Path(__file__).parents[1] / "bench/watermark.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    return bench.demo_pictures(10, seed=11)


def _marked(pics: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [(rng.bytes(4).hex(), p) for p in pics]


# -- the mark itself ----------------------------------------------------------------------------
def test_round_trip(pictures):
    for ident, pic in _marked(pictures[:4]):
        m = _watermark.embed(pic, int(ident, 16))
        assert m.shape == pic.shape and m.dtype == np.uint8
        psnr = 10 * np.log10(255**2 / np.mean((m.astype(float) - pic) ** 2))
        assert psnr > 34  # bench: 37.0-39.7 dB on studio-v1 pictures
        det = _watermark.detect(m)
        assert det.present and f"{det.identifier:08x}" == ident
    with pytest.raises(ValueError):
        _watermark.embed(pictures[0][:40, :40], 1)
    with pytest.raises(ValueError):
        _watermark.embed(pictures[0], 2**32)


# bench/watermark.py (40 studio-v1 pictures): every transform 40/40 exact and resolved
@pytest.mark.parametrize("transform", list(bench.TRANSFORMS))
def test_each_transform_at_the_benchmarked_rate(pictures, transform):
    f = bench.TRANSFORMS[transform]
    items = _marked(pictures)
    records = {}
    marked = []
    for ident, pic in items:
        m = _watermark.embed(pic, int(ident, 16))
        records[ident] = _phash.crop_hashes(m)
        marked.append((ident, m))
    exact = resolved = 0
    for ident, m in marked:
        moved = f(m)
        exact += f"{_watermark.detect(moved).identifier:08x}" == ident
        got, d, _ = bench.resolve(moved, records)
        resolved += got == ident and d <= _phash.MATCH_DISTANCE
    assert exact >= 9 and resolved >= 9, (transform, exact, resolved)  # 10/10 measured; one miss of margin


@pytest.mark.slow
@pytest.mark.data
def test_photos_at_the_benchmarked_rate(data_dir):
    """Dev photos (stand-ins for a real model's outputs): bench measures 18/18 for every transform
    but the 10% crop (13/18 exact, 15/18 resolved)."""
    photos = bench.dev_faces(data_dir)
    items = _marked(photos)
    records = {}
    marked = []
    for ident, pic in items:
        m = _watermark.embed(pic, int(ident, 16))
        records[ident] = _phash.crop_hashes(m)
        marked.append((ident, m))
    for name, f in bench.TRANSFORMS.items():
        ok = sum(bench.resolve(f(m), records)[0] == ident for ident, m in marked)
        floor = 0.7 if name == "crop 10%" else 0.9
        assert ok >= floor * len(marked), (name, ok, len(marked))


def test_pictures_never_marked_carry_no_mark(pictures, data_dir):
    """bench: 0/318 present (scores <= 4.9 against the threshold 6) and nothing resolved."""
    never = bench.demo_pictures(30, seed=12) + (bench.dev_faces(data_dir) if data_dir.is_dir() else [])
    records = {ident: _phash.crop_hashes(_watermark.embed(p, int(ident, 16))) for ident, p in _marked(pictures)}
    for pic in never:
        det = _watermark.detect(pic)
        assert not det.present and det.score < _watermark.DETECT_THRESHOLD
        assert bench.resolve(pic, records)[0] is None


def test_identifiers_are_drawn_again_when_taken(tmp_path):
    from cameo.registry._db import make_engine, transaction, upgrade
    from cameo.registry._models import OutputRecord

    eng = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(eng)
    with transaction(eng) as s:
        first = _soft_binding.draw_identifier(s)
        assert len(first) == 8 and int(first, 16) < 2**32
        s.add(OutputRecord(id=first, digest="sha256:x", media_type="image/png", generator="g", request_digest="r",
                           claim="{}", envelope=b"{}", created_at="t"))
        s.flush()
        drawn = {_soft_binding.draw_identifier(s, [first]) for _ in range(50)}
        assert first not in drawn
    eng.dispose()


# -- end to end ---------------------------------------------------------------------------------
def _png(out: dict) -> Path:
    return next(Path(o["file"]) for o in out["outputs"] if o["file"].endswith(".png"))


def _resave(src: Path, dst: Path, **kw) -> Path:
    Image.open(src).convert("RGB").save(dst, **kw)
    return dst


@SQLITE_ONLY
def test_a_stripped_output_resolves_to_its_record(cli: Cli):
    cli.grant("alice", "--uses", "3")
    tok = cli.json("token", "alice", "--as", "bob", "--generator", "studio-v1", "--request", "req.json")
    out = cli.generate([tok["token"]])
    png = _png(out)
    pv = cli.json("provenance", "verify", str(png))
    assert pv["source"] == "manifest" and pv["output_id"] and pv["cameos"] == [cli.r.cameo["alice"]]
    assert "c2pa.watermarked" in pv["actions"] and pv["soft_binding"]["alg"] == _watermark.ALGORITHM
    assert pv["output_id"] == next(o["output_id"] for o in out["outputs"] if o["file"] == str(png))
    for name, kw in (("q90.jpg", {"quality": 90}), ("q50.jpg", {"quality": 50})):
        stripped = _resave(png, cli.dir / name, **kw)
        wm = cli.json("provenance", "verify", str(stripped))
        assert wm["source"] == "watermark" and wm["output_id"] == pv["output_id"]
        assert wm["cameos"] == pv["cameos"] and wm["tokens"] == [tok["token_id"]]
        assert wm["consent_digests"] == pv["consent_digests"]
        assert wm["watermark"]["phash_distance"] <= _phash.MATCH_DISTANCE
    # the audio output has no watermark: its manifest alone (the record is kept all the same)
    wav = next(o for o in out["outputs"] if o["file"].endswith(".wav"))
    assert wav["watermark"] is False
    assert cli.json("provenance", "verify", wav["file"])["source"] == "manifest"


@SQLITE_ONLY
def test_a_never_made_picture_is_not_found(cli: Cli, data_dir):
    cli.grant()
    cli.generate([cli.token()])  # the registry holds records
    photos = sorted((data_dir / "faces").rglob("*.jpg"))[:3] if data_dir.is_dir() else []
    bench_pics = bench.demo_pictures(2, seed=13)
    for i, pic in enumerate(bench_pics):
        Image.fromarray(pic).save(cli.dir / f"never{i}.png")
    for f in [*photos, *(cli.dir / f"never{i}.png" for i in range(len(bench_pics)))]:
        err = cli.json("provenance", "verify", str(f), code=4)
        assert err["error_type"] == "ProvenanceMissing" and "no provenance" in err["error"]


@SQLITE_ONLY
def test_a_transplanted_watermark_does_not_verify(cli: Cli, data_dir):
    cli.grant()
    out = cli.generate([cli.token()])
    ident = cli.json("provenance", "verify", str(_png(out)))["output_id"]
    other = (np.asarray(Image.open(sorted((data_dir / "faces").rglob("*.jpg"))[0]).convert("RGB"))
             if data_dir.is_dir() else bench.demo_pictures(1, seed=99)[0])
    forged = cli.dir / "forged.png"
    Image.fromarray(_watermark.embed(other, int(ident, 16))).save(forged)  # the mark, copied with the public code
    assert _watermark.detect(np.asarray(Image.open(forged))).identifier == int(ident, 16)
    err = cli.json("provenance", "verify", str(forged), code=3)
    assert err["error_type"] == "ProvenanceInvalid" and "copied watermark" in err["error"]


@SQLITE_ONLY
def test_an_edited_record_does_not_verify(cli: Cli):
    cli.grant()
    out = cli.generate([cli.token()])
    stripped = _resave(_png(out), cli.dir / "s.jpg", quality=90)
    db = next(cli.r.home.path.glob("*.db"), None) if hasattr(cli.r, "home") else None
    if db is None:
        pytest.skip("the registry is not a SQLite file here")
    con = sqlite3.connect(db)
    claim = json.loads(con.execute("SELECT claim FROM outputs").fetchone()[0])
    claim["cameo_ids"] = ["cam_someone_else"]
    con.execute("UPDATE outputs SET claim = ?", (json.dumps(claim, sort_keys=True),))
    con.commit()
    con.close()
    err = cli.json("provenance", "verify", str(stripped), code=3)
    assert "altered" in err["error"]


@SQLITE_ONLY
def test_remix_is_denied_for_a_stripped_output(cli: Cli):
    cli.grant("alice", "--uses", "5")
    out = cli.generate([cli.token()])
    _resave(_png(out), cli.dir / "stripped.jpg", quality=90)  # no manifest any more
    (cli.dir / "remix.json").write_text(json.dumps({"prompt": "again", "references": ["stripped.jpg"]}))
    err = cli.generate([cli.token(request="remix.json")], request="remix.json", out="out2", code=3)
    assert [r["code"] for r in err["reasons"]] == ["remix.unconsented"]
    assert not (cli.dir / "out2").exists()


def test_the_manifest_names_the_soft_binding(tmp_path):
    import datetime as dt

    from conditioning.provenance import ProvenanceAuthority, inspect_output, sign_output

    auth = ProvenanceAuthority.create(tmp_path / "a", now=dt.datetime.now(dt.UTC))
    pic = bench.demo_pictures(1, seed=3)[0]
    p = tmp_path / "x.png"
    Image.fromarray(pic).save(p)
    m = _soft_binding.mark_output(p, "0badc0de")
    assert m.soft_binding == {"alg": _watermark.ALGORITHM, "value": "0badc0de"} and m.phashes
    sign_output(p, claim={"cameo_ids": []}, authority=auth, soft_binding=m.soft_binding)
    r = inspect_output(p, authority=auth)
    assert r.trusted and r.soft_binding == {"alg": _watermark.ALGORITHM, "value": "0badc0de"}
    assert "c2pa.watermarked" in r.actions and SOFT_BINDING_ASSERTION == "c2pa.soft-binding"
