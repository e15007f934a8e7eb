"""InsightFaceEncoder through insightface's real loading code, on tiny ONNX stand-ins.

No ArcFace weights exist offline, so the tests build two small models at run time with the real
signatures (see NOTES.md) and write them into a temporary model-pack folder:

- ``det_10g.onnx``: an SCRFD-shaped detector, input ``[1, 3, 640, 640]``, 9 outputs (3 strides x
  scores / boxes / 5 keypoints, 2 anchors), constant outputs that put exactly one face at a known
  place (scores are probabilities; box and keypoint offsets are in stride units);
- ``w600k_r50.onnx``: an ArcFace-shaped recognizer, ``[N, 3, 112, 112]`` -> ``[N, 512]``,
  two strided convolutions and a dense layer with fixed random weights.

insightface routes them by shape (>= 5 outputs: detector; square 112 input, one output: ArcFace),
aligns the crop with the detector's keypoints and embeds it. No .onnx file is kept in the repo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("insightface")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

from cameo._errors import EncoderUnavailable, MultipleFaces, NoFaceFound
from cameo.biometrics._pipeline import InsightFaceEncoder, extract_face_templates, face_sample

DET = 640
STRIDES = (8, 16, 32)
ANCHORS = 2
FACE_CENTRE = (320.0, 320.0)  # a stride-8 anchor centre
FACE_HALF = 100.0
# ArcFace's 5-point template (112 px), scaled around its centre onto the face box
_ARC = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])
KPS = (_ARC - [56.0, 72.0]) * (2 * FACE_HALF / 112.0) + FACE_CENTRE


def _keep_input(x: str, out: str, const: np.ndarray, nodes: list, inits: list) -> None:
    """out = const + 0 * mean(x): constant, but the graph input stays connected."""
    cname = f"{out}_const"
    inits.append(numpy_helper.from_array(const.astype(np.float32), cname))
    nodes.append(helper.make_node("Add", [cname, "zero_mean"], [out], name=f"add_{out}"))


def build_detector(path: Path, *, faces: int = 1) -> None:
    nodes: list = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0, name="reduce_mean"),
        helper.make_node("Mul", ["mean", "zero"], ["zero_mean"], name="mul_zero"),
    ]
    inits: list = [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    outputs = []
    scores, boxes, kpss = [], [], []
    for stride in STRIDES:
        n = (DET // stride) ** 2 * ANCHORS
        sc = np.zeros((n, 1), np.float32)
        bx = np.zeros((n, 4), np.float32)
        kp = np.zeros((n, 10), np.float32)
        if stride == 8:
            for k in range(faces):
                cx, cy = FACE_CENTRE[0] + k * 240.0 - (faces - 1) * 120.0, FACE_CENTRE[1]
                gx, gy = int(cx // stride), int(cy // stride)
                i = (gy * (DET // stride) + gx) * ANCHORS
                sc[i, 0] = 0.9
                bx[i] = np.array([FACE_HALF] * 4) / stride
                kp[i] = ((KPS - FACE_CENTRE) / stride).reshape(-1)
        scores.append(sc)
        boxes.append(bx)
        kpss.append(kp)
    for kind, arrs in (("score", scores), ("bbox", boxes), ("kps", kpss)):
        for stride, arr in zip(STRIDES, arrs):
            name = f"{kind}_{stride}"
            _keep_input("input.1", name, arr, nodes, inits)
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(
        nodes,
        "scrfd_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, DET, DET])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_recognizer(path: Path, *, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (16, 3, 4, 4)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (16, 16, 4, 4)).astype(np.float32)
    w3 = rng.normal(0, 0.05, (16 * 7 * 7, 512)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(w3, "w3"),
        numpy_helper.from_array(np.zeros(512, np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["data", "w1"], ["c1"], kernel_shape=[4, 4], strides=[4, 4], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[4, 4], strides=[4, 4], name="conv2"),
        helper.make_node("Flatten", ["c2"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["fc1"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 512])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models") / "standin_pack"
    d.mkdir()
    build_detector(d / "det_10g.onnx")
    build_recognizer(d / "w600k_r50.onnx")
    return d


@pytest.fixture(scope="module")
def encoder(pack: Path) -> InsightFaceEncoder:
    return InsightFaceEncoder(pack)


def _image(seed: int, size: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth random texture (sharp enough for the quality gate, different per seed)
    base = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((16, 16, 1), dtype=np.uint8))
    return np.ascontiguousarray(img)


def test_loads_through_insightface_and_names_itself(encoder: InsightFaceEncoder, pack: Path) -> None:
    from cameo.biometrics._encoder_id import sha256_file

    eid = encoder.encoder_id
    assert eid.family == "insightface-arcface"
    assert eid.version == "w600k-r50"
    assert eid.weights_sha256 == sha256_file(pack / "w600k_r50.onnx")
    assert eid.id == f"insightface-arcface-w600k-r50@{eid.weights_sha256[:16]}"
    assert encoder.dim == 512 and encoder.metric == "ip"
    assert "embedding" not in repr(encoder)


def test_one_deterministic_face_with_normed_512d_embedding(encoder: InsightFaceEncoder) -> None:
    img = _image(1)
    faces = encoder.observe(img, source="img.png")
    assert len(faces) == 1
    f = faces[0]
    assert f.box == pytest.approx((220.0, 220.0, 420.0, 420.0), abs=1.0)
    assert f.landmarks.shape == (5, 2)
    assert np.allclose(f.landmarks, KPS, atol=1.0)
    assert f.quality.det_score == pytest.approx(0.9, abs=1e-5)
    assert f.quality.size_px == pytest.approx(200.0, abs=1.0)
    assert f.embedding is not None and f.embedding.shape == (512,) and f.embedding.dtype == np.float32
    assert float(np.linalg.norm(f.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert "array" not in repr(f)
    again = encoder.observe(img, source="img.png")[0]
    assert np.array_equal(again.embedding, f.embedding)


def test_different_images_give_different_embeddings(encoder: InsightFaceEncoder) -> None:
    a = encoder.observe(_image(1), source="a")[0].embedding
    b = encoder.observe(_image(2), source="b")[0].embedding
    assert encoder.similarity(a, a) == pytest.approx(1.0)
    assert encoder.similarity(a, b) < 0.999
    assert encoder.distance(a, b) == pytest.approx(1.0 - encoder.similarity(a, b))


def test_non_square_image_is_letterboxed_and_scaled_back(encoder: InsightFaceEncoder) -> None:
    img = _image(3, size=1280)  # det_scale 0.5: the face comes back at twice the size
    f = encoder.observe(img, source="big.png")[0]
    assert f.box == pytest.approx((440.0, 440.0, 840.0, 840.0), abs=2.0)


def test_enrollment_pipeline_with_insightface(encoder: InsightFaceEncoder, tmp_path: Path) -> None:
    from PIL import Image

    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.png"
        Image.fromarray(_image(5)).save(p)
        paths.append(p)
    res = extract_face_templates(paths, encoder)
    assert res.encoder_id == encoder.encoder_id
    assert res.template.shape == (512,)
    assert float(np.linalg.norm(res.template)) == pytest.approx(1.0, abs=1e-5)  # normalised mean
    assert len(res.samples) == 2 and res.max_spread == pytest.approx(0.0, abs=1e-5)
    assert "array" not in repr(res)


def test_two_faces_are_refused(pack: Path, tmp_path: Path) -> None:
    d = tmp_path / "two"
    d.mkdir()
    build_detector(d / "det_10g.onnx", faces=2)
    (d / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes())
    enc = InsightFaceEncoder(d)
    assert len(enc.observe(_image(1), source="x")) == 2
    with pytest.raises(MultipleFaces, match="two.png"):
        face_sample(_image(1), enc, source="two.png")


def test_no_face_when_detector_scores_low(pack: Path, tmp_path: Path) -> None:
    d = tmp_path / "none"
    d.mkdir()
    build_detector(d / "det_10g.onnx", faces=0)
    (d / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes())
    enc = InsightFaceEncoder(d)
    with pytest.raises(NoFaceFound, match="blank.png"):
        face_sample(_image(1), enc, source="blank.png")


def test_pack_without_detector_is_a_typed_error(pack: Path, tmp_path: Path) -> None:
    d = tmp_path / "recognizer_only"
    d.mkdir()
    (d / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes())
    with pytest.raises(EncoderUnavailable, match="detection") as ei:
        InsightFaceEncoder(d)
    assert ei.value.__cause__ is not None


def test_pack_without_recognizer_is_a_typed_error(pack: Path, tmp_path: Path) -> None:
    d = tmp_path / "detector_only"
    d.mkdir()
    (d / "det_10g.onnx").write_bytes((pack / "det_10g.onnx").read_bytes())
    with pytest.raises(EncoderUnavailable, match="recognition"):
        InsightFaceEncoder(d)


def test_corrupt_model_file_is_a_typed_error(pack: Path, tmp_path: Path) -> None:
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "det_10g.onnx").write_bytes(b"not an onnx model at all")
    (d / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes())
    with pytest.raises(EncoderUnavailable) as ei:
        InsightFaceEncoder(d)
    assert ei.value.__cause__ is not None


def test_missing_pack_dir(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailable):
        InsightFaceEncoder(tmp_path / "nope")
