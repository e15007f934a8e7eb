"""dlib face pipeline: detection, quality gates, typed refusals, templates and calibration."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cameo.biometrics._encoder_id import EncoderId
from cameo._errors import (
    FaceTooBlurry,
    FaceTooSmall,
    InconsistentIdentity,
    MediaError,
    MultipleFaces,
    NoFaceFound,
)
from cameo.biometrics._pipeline import (
    DLIB_MATCH_THRESHOLD,
    DlibFaceEncoder,
    extract_face_templates,
    face_sample,
    load_image,
    observe_faces,
)


@pytest.fixture(scope="module")
def enc() -> DlibFaceEncoder:
    return DlibFaceEncoder()


def _people(data_dir: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted((data_dir / "faces").iterdir()):
        if d.is_dir() and not d.name.startswith("_"):
            out[d.name] = sorted(d.glob("*.jpg"))
    return out


@pytest.fixture(scope="module")
def embeddings(enc: DlibFaceEncoder, data_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for person, files in _people(data_dir).items():
        for f in files:
            out[f"{person}/{f.name}"] = face_sample(load_image(f), enc, source=f.name).embedding
    return out


def test_encoder_id() -> None:
    enc = DlibFaceEncoder()
    eid = enc.encoder_id
    assert isinstance(eid, EncoderId)
    assert eid.id.startswith("dlib-resnet-v1@") and len(eid.id.split("@")[1]) == 16
    assert eid.id.split("@")[1] == eid.weights_sha256[:16]
    assert enc.encoder_id is eid  # computed once
    assert enc.metric == "l2" and enc.dim == 128 and enc.threshold == DLIB_MATCH_THRESHOLD
    with pytest.raises(ValueError):
        EncoderId("dlib-resnet", "v1", "not-hex")


def test_observation_fields(enc: DlibFaceEncoder, data_dir: Path) -> None:
    obs = observe_faces(data_dir / "faces" / "obama" / "1.jpg", enc)
    assert len(obs) == 1
    o = obs[0]
    assert o.landmarks.shape == (5, 2)
    assert o.embedding is not None and o.embedding.shape == (128,) and o.embedding.dtype == np.float32
    assert 1.2 < float(np.linalg.norm(o.embedding)) < 1.6  # dlib descriptors are not unit vectors
    assert o.quality.size_px > 100 and o.quality.sharpness > 100 and o.quality.det_score > 0
    assert "array" not in repr(o) and "embedding" not in repr(o)


def test_no_face(enc: DlibFaceEncoder, data_dir: Path) -> None:
    with pytest.raises(NoFaceFound, match="dogs.jpg"):
        extract_face_templates([data_dir / "faces" / "_noface" / "dogs.jpg"], enc)


@pytest.mark.parametrize("name", ["kit_rose.jpg", "biden_obama_bystander.jpg"])
def test_several_faces(enc: DlibFaceEncoder, data_dir: Path, name: str) -> None:
    with pytest.raises(MultipleFaces, match=name) as ei:
        extract_face_templates([data_dir / "faces" / "_multi" / name], enc)
    assert ei.value.exit_code == 2


def test_partial_face_counts_as_one(enc: DlibFaceEncoder, data_dir: Path) -> None:
    res = extract_face_templates([data_dir / "faces" / "_edge" / "obama_partial_face.jpg"], enc)
    assert len(res.samples) == 1 and res.max_spread == 0.0


def test_too_small(enc: DlibFaceEncoder, data_dir: Path, tmp_path: Path) -> None:
    img = Image.open(data_dir / "faces" / "obama" / "1.jpg").convert("RGB")
    small = img.resize((img.width // 3, img.height // 3), Image.LANCZOS)  # face ~50 px
    canvas = Image.new("RGB", (img.width, img.height), (128, 128, 128))
    canvas.paste(small, (0, 0))
    p = tmp_path / "small.jpg"
    canvas.save(p, quality=95)
    with pytest.raises(FaceTooSmall, match="small.jpg"):
        extract_face_templates([p], enc)


def test_too_blurry(enc: DlibFaceEncoder, data_dir: Path, tmp_path: Path) -> None:
    from PIL import ImageFilter

    img = Image.open(data_dir / "faces" / "obama" / "2.jpg").convert("RGB")
    p = tmp_path / "blur.jpg"
    img.filter(ImageFilter.GaussianBlur(5)).save(p, quality=95)
    faces = enc.detect(load_image(p), source="blur.jpg")
    if len(faces) != 1:
        pytest.skip("the detector lost the blurred face")
    with pytest.raises(FaceTooBlurry, match="blur.jpg"):
        extract_face_templates([p], enc)


def test_corrupt_file(enc: DlibFaceEncoder, tmp_path: Path) -> None:
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)
    with pytest.raises(MediaError, match="broken.jpg"):
        extract_face_templates([p], enc)


def test_template_is_mean_and_progress(enc: DlibFaceEncoder, data_dir: Path) -> None:
    files = sorted((data_dir / "faces" / "kit_harington").glob("*.jpg"))
    seen: list[tuple[int, int]] = []
    res = extract_face_templates(files, enc, progress=lambda a, b: seen.append((a, b)))
    assert seen == [(i + 1, len(files)) for i in range(len(files))]
    assert np.allclose(res.template, np.mean(res.embeddings, axis=0), atol=1e-6)
    assert res.encoder_id == enc.encoder_id and res.template.dtype == np.float32
    assert 0 < res.max_spread < DLIB_MATCH_THRESHOLD
    assert "array" not in repr(res)


def test_two_people_refused(enc: DlibFaceEncoder, data_dir: Path) -> None:
    f = data_dir / "faces"
    with pytest.raises(InconsistentIdentity, match="same person"):
        extract_face_templates([f / "biden" / "1.jpg", f / "lin_manuel_miranda" / "1.jpg"], enc)
    with pytest.raises(InconsistentIdentity, match="biden/1.jpg"):  # the odd one out is named
        extract_face_templates([f / "obama" / "1.jpg", f / "obama" / "2.jpg", f / "biden" / "1.jpg"], enc)


def test_rgb_not_bgr(enc: DlibFaceEncoder, data_dir: Path) -> None:
    img = load_image(data_dir / "faces" / "obama" / "1.jpg")
    a = face_sample(img, enc, source="rgb").embedding
    b = face_sample(np.ascontiguousarray(img[:, :, ::-1]), enc, source="bgr").embedding
    assert enc.distance(a, b) > 0.05  # colour order matters: load_image always gives RGB


@pytest.mark.data
def test_calibration_pairs(enc: DlibFaceEncoder, embeddings: dict[str, np.ndarray]) -> None:
    """DEV photos: same person 0.36-0.54, different 0.69-1.03 (dlib's threshold 0.6)."""
    same, diff = [], []
    for a, b in itertools.combinations(embeddings, 2):
        d = enc.distance(embeddings[a], embeddings[b])
        (same if a.split("/")[0] == b.split("/")[0] else diff).append(d)
    assert max(same) < DLIB_MATCH_THRESHOLD - 0.03
    assert min(diff) > DLIB_MATCH_THRESHOLD + 0.05


@pytest.mark.data
def test_calibration_enrolled_mean_vs_probe(enc: DlibFaceEncoder, embeddings: dict[str, np.ndarray]) -> None:
    """Template = mean of all but one photo; genuine probe <= 0.50, impostors >= 0.67."""
    per: dict[str, list[str]] = defaultdict(list)
    for k in embeddings:
        per[k.split("/")[0]].append(k)
    for person, keys in per.items():
        if len(keys) < 2:
            continue
        for probe in keys:
            tpl = enc.aggregate([embeddings[k] for k in keys if k != probe])
            assert enc.matches(tpl, embeddings[probe]), probe
            for other, e in embeddings.items():
                if not other.startswith(person + "/"):
                    assert not enc.matches(tpl, e), (person, other)
