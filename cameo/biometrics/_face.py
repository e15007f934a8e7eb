"""Face detection, landmarks, quality and embeddings: dlib (default) and insightface (production).

Both encoders share one surface:

- ``encoder_id`` (:class:`~cameo.biometrics._encoder_id.EncoderId`), ``dim``, ``metric`` (``"l2"`` or
  ``"ip"``: what a search index should use), ``threshold`` (in the metric's own unit:
  a maximum euclidean distance for dlib, a minimum cosine for insightface);
- ``distance(a, b)`` (lower is closer, for both), ``similarity(a, b)`` (higher is closer),
  ``matches(a, b)``, ``aggregate(embeddings)`` (the template stored for several samples);
- ``detect(rgb, source=...)`` (boxes, landmarks, quality; no embeddings, cheap) and
  ``observe(rgb, source=...)`` (the same plus an embedding per face);
  ``embed(rgb, observation)`` adds the embedding to one detection.

Images are RGB ``uint8`` ``(H, W, 3)`` arrays (see :mod:`cameo.biometrics._media`): dlib shifts a
descriptor by ~0.28 when given BGR, so the conversion is done once, at load time.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cameo.biometrics._encoder_id import EncoderId, sha256_file
from cameo._errors import EncoderUnavailable

__all__ = [
    "DLIB_MATCH_THRESHOLD",
    "INSIGHTFACE_MATCH_THRESHOLD",
    "MIN_FACE_PX",
    "MIN_SHARPNESS",
    "DlibFaceEncoder",
    "FaceObservation",
    "FaceQuality",
    "InsightFaceEncoder",
    "sharpness",
]

log = logging.getLogger(__name__)

#: dlib ResNet: same person at euclidean distance <= this (dlib's own 0.6).
#: DEV photos (faces/, one descriptor per photo): same person 0.341-0.534 (n=11), different
#: people 0.689-1.024 (n=80); enrolled mean of all-but-one photo vs the held-out photo:
#: genuine <= 0.46, best impostor 0.68 (see tests/test_face.py). Video frames: one person's
#: frames <= 0.50 apart, the closest two DEV video people 0.70. Known weakness: on some East
#: Asian faces different people fall under 0.6 (a DEV/HELD-OUT pair at 0.55), so screening
#: reports distances, not just yes/no.
DLIB_MATCH_THRESHOLD = 0.6

#: insightface ArcFace (buffalo_l w600k_r50): same person at cosine >= this. Not calibrated here
#: (no ArcFace weights offline); 0.35 is within the 0.28-0.40 range commonly used for this model
#: family. Re-calibrate on real data before relying on it.
INSIGHTFACE_MATCH_THRESHOLD = 0.35

#: Faces narrower than this (detector box, pixels) are refused for enrollment.
#: DEV enrollment photos: 73-259 px; video frames 180-345 px; the background bystander in
#: ``_multi/biden_obama_bystander.jpg`` (found only with upsampling) ~50-60 px. dlib's ResNet
#: works on 150 px chips: below ~60 px the descriptor is mostly upscaling blur.
MIN_FACE_PX = 60

#: Variance of the Laplacian of the face crop resized to 112x112 grey; below this a face is too
#: blurry. DEV photos 117-1212, video frames 28-1045 (``real_vr_face2``, soft upscaled footage:
#: 28-51). The same photos with a Gaussian blur: sigma 1.5 -> 7-132, sigma 3 -> 3-35,
#: sigma 5 -> 2-12. 15 refuses heavy blur (sigma >= 5 everywhere, sigma 3 on most photos) and keeps
#: a ~2x margin under the softest real footage.
MIN_SHARPNESS = 15.0

_SHARP_SIZE = 112


@dataclass(frozen=True)
class FaceQuality:
    """Quality of one detected face: box width in pixels, sharpness, detector score."""

    size_px: float
    sharpness: float
    det_score: float


@dataclass(frozen=True)
class FaceObservation:
    """One face in one image. ``embedding`` is None until :meth:`embed` fills it.

    ``box`` is (left, top, right, bottom) in pixels and may extend past the image border;
    ``landmarks`` is 5x2 (x, y) in the encoder's convention (dlib: eye corners + nose base;
    insightface: eye centres, nose tip, mouth corners); ``dense_landmarks`` is dlib's 68-point
    shape when requested (liveness uses it).
    """

    source: str
    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    quality: FaceQuality
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    dense_landmarks: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


def sharpness(rgb: np.ndarray, box: Sequence[float]) -> float:
    """Variance of the Laplacian of the face crop (clipped to the image), grey, resized to 112 px.

    Resizing makes the figure comparable between small and large faces.
    """
    import cv2

    h, w = rgb.shape[:2]
    l, t, r, b = (round(v) for v in box)
    l, t, r, b = max(0, l), max(0, t), min(w, r), min(h, b)
    if r - l < 4 or b - t < 4:
        return 0.0
    grey = cv2.cvtColor(rgb[t:b, l:r], cv2.COLOR_RGB2GRAY)
    interp = cv2.INTER_AREA if grey.shape[0] > _SHARP_SIZE else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (_SHARP_SIZE, _SHARP_SIZE), interpolation=interp)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _image_key(img: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """Identity of an image buffer (a shape fitted on one image is not reused on another)."""
    return (img.__array_interface__["data"][0], img.shape)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an RGB uint8 array of shape (H, W, 3)")
    return rgb if rgb.flags.c_contiguous else np.ascontiguousarray(rgb)


# -- dlib ---------------------------------------------------------------------------------------
def _dlib_model_dir() -> Path:
    """Folder of face_recognition_models' .dat files, found without importing the package
    (its ``__init__`` imports ``pkg_resources``, deprecated and gone from setuptools >= 81)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable("face_recognition_models is not installed (dlib face models)")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    raise EncoderUnavailable("face_recognition_models has no models/ folder")


_DLIB_REC = "dlib_face_recognition_resnet_model_v1.dat"
_DLIB_SP5 = "shape_predictor_5_face_landmarks.dat"
_DLIB_SP68 = "shape_predictor_68_face_landmarks.dat"
_SHA_CACHE: dict[str, str] = {}
_DLIB_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def _cached_sha256(path: Path) -> str:
    key = str(path)
    with _LOCK:
        if key not in _SHA_CACHE:
            _SHA_CACHE[key] = sha256_file(path)
        return _SHA_CACHE[key]


def _dlib_models() -> dict[str, object]:
    """Load dlib's detector, shape predictors and ResNet once per process (shared, read-only)."""
    with _LOCK:
        if not _DLIB_MODELS:
            try:
                import dlib
            except ImportError as e:  # pragma: no cover - dlib-bin is a hard dependency
                raise EncoderUnavailable("dlib is not installed") from e
            d = _dlib_model_dir()
            try:
                _DLIB_MODELS["det"] = dlib.get_frontal_face_detector()
                _DLIB_MODELS["sp5"] = dlib.shape_predictor(str(d / _DLIB_SP5))
                _DLIB_MODELS["sp68"] = dlib.shape_predictor(str(d / _DLIB_SP68))
                _DLIB_MODELS["rec"] = dlib.face_recognition_model_v1(str(d / _DLIB_REC))
            except RuntimeError as e:
                _DLIB_MODELS.clear()
                raise EncoderUnavailable(f"dlib face models cannot be loaded from {d}") from e
        return _DLIB_MODELS


class DlibFaceEncoder:
    """dlib HOG detector + 5-point alignment + ResNet descriptor (128-d, euclidean).

    Detection runs without upsampling first (~17 ms an image here) and retries with one
    upsampling step (~70 ms) only when nothing was found, for small faces.
    A template for several samples is the plain mean of the descriptors: dlib's space is
    euclidean (descriptors are not unit vectors, norm ~1.4) and its 0.6 threshold was set for
    raw descriptors; normalising would change the distances the threshold was tuned for.
    """

    family = "dlib-resnet"
    version = "v1"
    dim = 128
    metric = "l2"
    threshold = DLIB_MATCH_THRESHOLD

    def __init__(self, *, upsample_retry: bool = True) -> None:
        self.upsample_retry = upsample_retry
        self._encoder_id: EncoderId | None = None

    @property
    def encoder_id(self) -> EncoderId:
        if self._encoder_id is None:
            self._encoder_id = EncoderId(
                self.family, self.version, _cached_sha256(_dlib_model_dir() / _DLIB_REC)
            )
        return self._encoder_id

    def _models(self) -> dict[str, object]:
        return _dlib_models()

    def detect(
        self, rgb: np.ndarray, *, source: str, dense: bool = False, upsample: int | None = None
    ) -> list[FaceObservation]:
        """Faces in ``rgb`` with landmarks and quality, without embeddings.

        ``upsample``: force one detector upsampling level (default: 0, then 1 if none found).
        ``dense``: also fit dlib's 68-point shape (``dense_landmarks``; ~1 ms a face).
        """
        img = _check_rgb(rgb)
        m = self._models()
        det, sp5 = m["det"], m["sp5"]
        levels = [upsample] if upsample is not None else ([0, 1] if self.upsample_retry else [0])
        rects, scores = [], []
        for up in levels:
            rects, scores, _ = det.run(img, up, 0.0)  # type: ignore[attr-defined]
            if len(rects):
                break
        out = []
        for r, s in zip(rects, scores):
            shape = sp5(img, r)  # type: ignore[operator]
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            box = (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))
            dense_pts = None
            if dense:
                s68 = m["sp68"](img, r)  # type: ignore[operator]
                dense_pts = np.array([[p.x, p.y] for p in s68.parts()], dtype=np.float32)
            q = FaceQuality(size_px=float(r.width()), sharpness=sharpness(img, box), det_score=float(s))
            ob = FaceObservation(source=source, box=box, landmarks=pts, quality=q, dense_landmarks=dense_pts)
            object.__setattr__(ob, "_dlib_shape", (_image_key(img), shape))  # reused by embed()
            out.append(ob)
        return out

    def embed(self, rgb: np.ndarray, observation: FaceObservation) -> FaceObservation:
        """``observation`` with its 128-d descriptor (float32) filled in."""
        import dlib

        img = _check_rgb(rgb)
        m = self._models()
        cached = getattr(observation, "_dlib_shape", None)
        if cached is not None and cached[0] == _image_key(img):
            shape = cached[1]
        else:
            l, t, rr, b = (round(v) for v in observation.box)
            shape = m["sp5"](img, dlib.rectangle(l, t, rr, b))  # type: ignore[operator]
        vec = np.asarray(m["rec"].compute_face_descriptor(img, shape), dtype=np.float32)  # type: ignore[attr-defined]
        return replace(observation, embedding=vec)

    def observe(self, rgb: np.ndarray, *, source: str, dense: bool = False) -> list[FaceObservation]:
        """Every face in ``rgb``, each with landmarks, quality and its descriptor."""
        return [self.embed(rgb, ob) for ob in self.detect(rgb, source=source, dense=dense)]

    # -- comparison ---------------------------------------------------------------------------
    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance (lower is closer)."""
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """``-distance`` (higher is closer): only for ranking; compare :meth:`distance` to
        :attr:`threshold`."""
        return -self.distance(a, b)

    def matches(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.distance(a, b) <= self.threshold

    @staticmethod
    def aggregate(embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Template for several samples: the plain mean (see the class docstring)."""
        arr = np.asarray(embeddings, dtype=np.float64)
        return arr.mean(axis=0).astype(np.float32)

    def __repr__(self) -> str:
        return f"DlibFaceEncoder(upsample_retry={self.upsample_retry})"


# -- insightface --------------------------------------------------------------------------------
class InsightFaceEncoder:
    """insightface model pack (e.g. ``buffalo_l``): SCRFD detector + ArcFace recognizer, 512-d.

    ``model_dir`` is the pack's folder (``det_*.onnx``, ``w600k_*.onnx``, ... or a V2 package
    with ``manifest.json``). It is loaded through insightface's own ``FaceAnalysis`` /
    ``model_zoo.get_model`` routing on onnxruntime's CPU provider; nothing is downloaded.
    Embeddings are L2-normalised; the template is the re-normalised mean (cosine space).
    """

    family = "insightface-arcface"
    metric = "ip"
    threshold = INSIGHTFACE_MATCH_THRESHOLD

    def __init__(
        self,
        model_dir: str | Path,
        *,
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise EncoderUnavailable(f"insightface model pack not found: {self.model_dir.name}")
        try:
            import onnxruntime
            from insightface.app import FaceAnalysis
        except ImportError as e:  # pragma: no cover - hard dependencies
            raise EncoderUnavailable("insightface / onnxruntime are not installed") from e
        try:
            onnxruntime.set_default_logger_severity(3)
            app = FaceAnalysis(
                name=str(self.model_dir.resolve()),
                allowed_modules=["detection", "recognition"],
                providers=["CPUExecutionProvider"],
            )
            app.prepare(ctx_id=-1, det_size=det_size, det_thresh=det_thresh)
        except AssertionError as e:
            raise EncoderUnavailable(
                f"insightface model pack {self.model_dir.name} has no usable detection model"
            ) from e
        except Exception as e:  # onnx / onnxruntime / manifest errors have no common base
            raise EncoderUnavailable(
                f"insightface model pack {self.model_dir.name} cannot be loaded ({type(e).__name__})"
            ) from e
        rec = app.models.get("recognition")
        if rec is None:
            raise EncoderUnavailable(f"insightface model pack {self.model_dir.name} has no recognition model")
        self._app = app
        self._rec = rec
        out_shape = rec.output_shape
        self.dim = int(out_shape[-1]) if isinstance(out_shape[-1], int) else 512
        rec_path = Path(rec.model_file)
        self.version = rec_path.stem.lower().replace("_", "-") or "unknown"
        self._encoder_id = EncoderId(self.family, self.version, sha256_file(rec_path))

    @property
    def encoder_id(self) -> EncoderId:
        """Family, recognizer file name and the recognizer's weights sha256 (the embedding space
        is the recognizer's; the detector only places the crop)."""
        return self._encoder_id

    def _faces(self, rgb: np.ndarray, source: str) -> list[object]:
        img = _check_rgb(rgb)
        bgr = np.ascontiguousarray(img[:, :, ::-1])  # insightface works on OpenCV BGR images
        try:
            with warnings.catch_warnings():  # scikit-image deprecations inside insightface's align
                warnings.simplefilter("ignore", FutureWarning)
                return list(self._app.get(bgr))
        except Exception as e:  # onnxruntime raises its own exception types
            from cameo._errors import MediaError

            raise MediaError(f"face analysis failed ({type(e).__name__})", source=source) from e

    def _to_obs(self, rgb: np.ndarray, f: object, source: str, with_embedding: bool) -> FaceObservation:
        bbox = np.asarray(f.bbox, dtype=np.float64)  # type: ignore[attr-defined]
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
        kps = f.kps  # type: ignore[attr-defined]
        lm = np.asarray(kps, dtype=np.float32) if kps is not None else np.zeros((5, 2), np.float32)
        q = FaceQuality(
            size_px=box[2] - box[0],
            sharpness=sharpness(rgb, box),
            det_score=float(f.det_score),  # type: ignore[attr-defined]
        )
        emb = None
        if with_embedding and getattr(f, "embedding", None) is not None:
            v = np.asarray(f.embedding, dtype=np.float64).ravel()  # type: ignore[attr-defined]
            n = float(np.linalg.norm(v))
            emb = (v / n if n > 0 else v).astype(np.float32)
        return FaceObservation(source=source, box=box, landmarks=lm, quality=q, embedding=emb)

    def detect(self, rgb: np.ndarray, *, source: str, dense: bool = False) -> list[FaceObservation]:
        """Faces with 5 keypoints and quality (this pack computes embeddings in the same pass)."""
        return [self._to_obs(rgb, f, source, True) for f in self._faces(rgb, source)]

    def observe(self, rgb: np.ndarray, *, source: str, dense: bool = False) -> list[FaceObservation]:
        """Every face in ``rgb`` with keypoints, quality and its normed 512-d embedding."""
        return self.detect(rgb, source=source)

    def embed(self, rgb: np.ndarray, observation: FaceObservation) -> FaceObservation:
        if observation.embedding is not None:
            return observation
        from insightface.app.common import Face

        face = Face(bbox=np.asarray(observation.box), kps=observation.landmarks, det_score=1.0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._rec.get(np.ascontiguousarray(_check_rgb(rgb)[:, :, ::-1]), face)
        except Exception as e:
            from cameo._errors import MediaError

            raise MediaError(f"face embedding failed ({type(e).__name__})", source=observation.source) from e
        v = np.asarray(face.embedding, dtype=np.float64).ravel()
        return replace(observation, embedding=(v / np.linalg.norm(v)).astype(np.float32))

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity (higher is closer)."""
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """1 - cosine (lower is closer)."""
        return 1.0 - self.similarity(a, b)

    def matches(self, a: np.ndarray, b: np.ndarray) -> bool:
        return self.similarity(a, b) >= self.threshold

    @staticmethod
    def aggregate(embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Template for several samples: the re-normalised mean of unit vectors."""
        m = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
        return (m / np.linalg.norm(m)).astype(np.float32)

    def __repr__(self) -> str:
        return f"InsightFaceEncoder(model_dir={self.model_dir.name!r}, id={self._encoder_id.id!r})"
