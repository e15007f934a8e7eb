"""Liveness of an enrollment video: one live person, moving in 3-D, speaking.

Inputs are what the pipeline already computed: per sampled frame the faces found (with dlib's
68-point shape and an embedding) and the clip's audio (16 kHz mono, or None). Nothing here
decodes media or runs a network, so the checks are cheap and testable on synthetic data.

Four questions, each with its own metric (figures: DEV ``videos/`` and ``videos/extra/``, 16
frames spread over each clip, dlib HOG + 68-point shape + ResNet; "photo" = the still-photo and
photo-pan attacks, "real" = the ``real_*`` clips, including the nearly static ``real_vr_face2``):

1. Is a face there? Share of sampled frames with exactly one face >= :data:`MIN_FACE_FRAMES`.
2. Does it move in 3-D (not a photo, not a photo slid, zoomed or rotated in the image plane)?
   - ``nonplanar``: each frame's 68 landmarks are mapped onto the clip's mean shape by the best
     homography (8 degrees of freedom: it absorbs translation, zoom, in-plane rotation and even
     the perspective tilt of a hand-held print, which are all planar); the RMS residual in units
     of the inter-ocular distance, 90th percentile over frames. A planar photo leaves only
     landmark jitter; a turning head (parallax) or a talking mouth does not fit one homography.
     DEV photo 0.009-0.014, real 0.035-0.102: threshold :data:`NONPLANAR_MIN` = 0.022 (about
     the geometric mean of the two edges, 1.6x from each).
   - ``mouth_sd`` (std of inner-lip opening / inter-ocular distance) and ``pose_range`` (range of
     yaw/pitch proxies: nose offset from the eye mid-point along / across the eye axis, divided
     by the eye distance; invariant to any 2-D similarity). DEV photo: mouth <= 0.010, pose
     <= 0.047; real talkers: mouth 0.051-0.095; head movers: pose 0.18-0.58 (the silent
     head-mover: mouth 0.008, pose 0.33; the static talker: mouth 0.067, pose 0.10). At least
     one of ``mouth_sd >= 0.025`` / ``pose_range >= 0.08`` is required as well: a second,
     independent sign of life.
3. Is it one person throughout (no splice)? On the per-frame embeddings: ``split_distance``, the
   largest distance between the centroids of frames [0, k) and [k, n) over all cut points k, and
   ``max_pair_distance``. dlib DEV: real split <= 0.29, pair <= 0.48; splices split 0.70-0.95,
   pair 0.85-1.04. Thresholds :data:`SPLIT_MAX` 0.45 and :data:`PAIR_MAX` 0.70.
4. Is there a voice? Audio present, and :func:`cameo.biometrics._voice.check_speech` passes (the silent
   head-mover has an audio track at -60 dBFS: refused as near silence). When voice partial
   embeddings are given, ``voice_split`` (lowest cosine between the partial-embedding centroids
   either side of a cut, over all cuts) flags a change of speaker mid-clip: DEV one speaker
   0.80-0.91 (0.80 on the 3 s LibriSpeech track of the photo attacks), the spliced audio of
   ``extra/splice`` 0.64. Threshold :data:`VOICE_SPLIT_MIN` 0.70 (thin: ~0.06-0.10 each side).

5. Does the speech come from this mouth (not a dub)? ``av_sync_z`` (:mod:`cameo.biometrics._avsync`): the
   mouth opening on every frame of the first 10 s against the speech envelope, best correlation
   within +-0.32 s, in standard deviations above the same correlation at wrong alignments
   (the audio circularly shifted by >= 1 s). Measured (every frame, dlib 68 points):
   real speaking clips 0.95-3.97 (``real_talking_head`` 1.07, ``real_katie_hill`` 1.20,
   ``real_bob_menendez`` 1.25, ``real_hdtf_rd_radio2`` 3.97, the almost static ``real_vr_face2``
   0.95); ``voice_swap`` -1.15. Re-dubbing each real face with every other real clip's audio
   (20 pairs) gives -1.39 to 1.56 (the top two pair two cuts of one source clip, so they are in
   sync): a dub can correlate by chance as well as a real clip does, so a dub is only refused
   where there is no sign of synchrony at all: :data:`SYNC_Z_MIN` = 0.0 (0.95 under the lowest
   real clip, 1.15 over ``voice_swap``). It catches 12 of the 20 re-dubbed pairs; the rest pass, and a dubbed voice that matches an enrolled
   one is still caught by the identity check. Not judged (no reason given) when a face is
   missing on over 20% of the frames or the clip is under 3 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cameo._errors import LivenessFailed, Reason, VoiceError
from cameo.biometrics._face import FaceObservation

__all__ = [
    "MIN_FACE_FRAMES",
    "SYNC_Z_MIN",
    "MOUTH_SD_MIN",
    "NONPLANAR_MIN",
    "PAIR_MAX",
    "POSE_RANGE_MIN",
    "SPLIT_MAX",
    "VOICE_SPLIT_MIN",
    "FrameFaces",
    "LivenessReport",
    "assess_video",
    "require_live",
]

#: Share of sampled frames that must show exactly one face.
MIN_FACE_FRAMES = 0.75
#: Minimum frames with one face for any verdict at all.
MIN_FRAMES = 6
#: 90th-percentile homography residual (inter-ocular units). DEV photo <= 0.015, real >= 0.031.
NONPLANAR_MIN = 0.022
#: Std of the mouth opening (inter-ocular units). DEV photo <= 0.009, real talkers >= 0.06.
MOUTH_SD_MIN = 0.025
#: Range of the yaw/pitch proxies. DEV photo <= 0.047, real head movers >= 0.18, the static
#: talker 0.10.
POSE_RANGE_MIN = 0.08
#: Identity thresholds per face metric: (split centroid distance, max pairwise distance).
#: dlib (euclidean): real split <= 0.29 / pair <= 0.48; splices split >= 0.70 / pair >= 0.85.
#: insightface (1 - cosine): not calibrated here (no ArcFace weights offline); set from the
#: usual same-person cosine (>= ~0.35) with a margin.
IDENTITY_LIMITS = {"l2": (0.45, 0.70), "ip": (0.55, 0.75)}
SPLIT_MAX, PAIR_MAX = IDENTITY_LIMITS["l2"]
#: Cosine between the voice partial-embedding centroids either side of the best cut.
VOICE_SPLIT_MIN = 0.70
#: Audio-visual synchrony (z over wrong alignments) under which the speech is not this mouth's.
#: DEV real speaking clips 0.95-3.97, the dubbed ``voice_swap`` -1.15 (see the module docstring).
SYNC_Z_MIN = 0.0


@dataclass(frozen=True)
class FrameFaces:
    """The faces found in one sampled video frame."""

    index: int
    time: float
    faces: Sequence[FaceObservation] = field(repr=False)


@dataclass(frozen=True)
class LivenessReport:
    """Verdict on one video: ``passed``, every reason it did not, and the metrics measured."""

    passed: bool
    reasons: tuple[Reason, ...]
    metrics: dict[str, Any] = field(hash=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


# -- geometry -----------------------------------------------------------------------------------
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_UPPER_INNER_LIP = [61, 62, 63]
_LOWER_INNER_LIP = [67, 66, 65]


def _similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` mapped onto ``dst`` by the least-squares 2-D similarity (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d.T @ s)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    scale = sv.sum() / max((s**2).sum(), 1e-12)
    return (scale * (r @ s.T)).T + md


def _mean_shape(shapes: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Generalised Procrustes mean of landmark sets (similarity-invariant)."""
    ref = shapes[0]
    for _ in range(iterations):
        ref = np.mean([_similarity_align(s, ref) for s in shapes], axis=0)
    return ref


def _iod(shape: np.ndarray) -> float:
    return float(np.linalg.norm(shape[_LEFT_EYE].mean(0) - shape[_RIGHT_EYE].mean(0)))


def _homography_residuals(shapes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import cv2

    scale = max(_iod(ref), 1e-6)
    out = []
    for s in shapes:
        h, _ = cv2.findHomography(s.astype(np.float64), ref.astype(np.float64), 0)
        if h is None:
            out.append(np.inf)
            continue
        warped = cv2.perspectiveTransform(s[None].astype(np.float64), h)[0]
        out.append(float(np.sqrt(((warped - ref) ** 2).sum(-1).mean())) / scale)
    return np.asarray(out)


def _pose_proxies(shape: np.ndarray) -> tuple[float, float]:
    le, re = shape[_LEFT_EYE].mean(0), shape[_RIGHT_EYE].mean(0)
    mid, axis = (le + re) / 2.0, re - le
    d2 = float(axis @ axis) or 1e-12
    perp = np.array([-axis[1], axis[0]])
    off = shape[_NOSE_TIP] - mid
    return float(off @ axis / d2), float(off @ perp / d2)


def _mouth_opening(shape: np.ndarray) -> float:
    gap = shape[_UPPER_INNER_LIP].mean(0) - shape[_LOWER_INNER_LIP].mean(0)
    return float(np.linalg.norm(gap)) / max(_iod(shape), 1e-6)


def _split_distance(emb: np.ndarray, dist: Any, min_side: int = 2) -> float:
    n = len(emb)
    best = 0.0
    for k in range(min_side, n - min_side + 1):
        best = max(best, float(dist(emb[:k].mean(0), emb[k:].mean(0))))
    return best


def _voice_split(partials: np.ndarray, min_side: int = 2) -> float | None:
    n = len(partials)
    if n < 2 * min_side:
        return None
    worst = 1.0
    for k in range(min_side, n - min_side + 1):
        a, b = partials[:k].mean(0), partials[k:].mean(0)
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return worst


# -- verdict ------------------------------------------------------------------------------------
def assess_video(
    frames: Sequence[FrameFaces],
    audio: np.ndarray | None,
    *,
    face_metric: str = "l2",
    distance: Any = None,
    voice_partials: np.ndarray | None = None,
    mouth_track: Any = None,
    source: str | None = None,
) -> LivenessReport:
    """Judge a sampled video (see the module docstring for each check and its figures).

    ``frames``: every sampled frame, including those without a face. Faces need
    ``dense_landmarks`` (dlib 68 points) for the motion checks and ``embedding`` for the
    identity check. ``distance``: the face encoder's distance (default euclidean);
    ``face_metric``: ``"l2"`` or ``"ip"`` (picks the identity thresholds).
    ``audio``: 16 kHz mono float32, or None when the video has no audio stream.
    ``voice_partials``: resemblyzer partial embeddings of the speech, if computed.
    ``mouth_track``: a :class:`cameo.biometrics._avsync.MouthTrack` (every frame), for the synchrony check.
    Never raises for a bad video: the reasons say what is wrong (see :func:`require_live`).
    """
    from cameo.biometrics._voice import check_speech

    speech_ok = False
    reasons: list[Reason] = []
    m: dict[str, Any] = {"frames": len(frames)}
    one = [f.faces[0] for f in frames if len(f.faces) == 1]
    multi = sum(1 for f in frames if len(f.faces) > 1)
    m["face_frames"] = len(one)
    m["multi_face_frames"] = multi
    ratio = len(one) / max(len(frames), 1)
    m["face_frame_ratio"] = round(ratio, 3)
    if multi > len(frames) * (1 - MIN_FACE_FRAMES):
        reasons.append(Reason("several_faces", f"several faces in {multi} of {len(frames)} sampled frames"))
    if len(one) < MIN_FRAMES or ratio < MIN_FACE_FRAMES:
        reasons.append(
            Reason("face_missing", f"one face is visible in only {len(one)} of {len(frames)} sampled frames")
        )

    # 2. motion --------------------------------------------------------------------------------
    dense = [o.dense_landmarks for o in one if o.dense_landmarks is not None]
    if len(dense) >= MIN_FRAMES:
        shapes = np.asarray(dense, dtype=np.float64)
        ref = _mean_shape(shapes)
        nonplanar = float(np.percentile(_homography_residuals(shapes, ref), 90))
        mouth = np.array([_mouth_opening(s) for s in shapes])
        pose = np.array([_pose_proxies(s) for s in shapes])
        pose_range = float(max(np.ptp(pose[:, 0]), np.ptp(pose[:, 1])))
        centres = np.array([o.center for o in one])
        widths = np.array([o.width for o in one])
        travel = float(np.ptp(centres, axis=0).max() / max(float(np.median(widths)), 1e-6))
        m.update(
            nonplanar=round(nonplanar, 4),
            mouth_sd=round(float(mouth.std()), 4),
            pose_range=round(pose_range, 4),
            box_travel=round(travel, 3),
            zoom_range=round(float(widths.max() / max(widths.min(), 1e-6)), 3),
        )
        lively = mouth.std() >= MOUTH_SD_MIN or pose_range >= POSE_RANGE_MIN
        if nonplanar < NONPLANAR_MIN or not lively:
            if travel < 0.05 and m["zoom_range"] < 1.1:
                reasons.append(Reason("still_image", "the face does not move at all: a still image"))
            else:
                reasons.append(
                    Reason(
                        "no_3d_motion",
                        "the face only moves as a flat picture would (slide, zoom, rotate):"
                        " no head turn, no expression",
                    )
                )
    elif one:
        reasons.append(Reason("no_landmarks", "facial landmarks are missing: motion cannot be judged"))

    # 3. identity ------------------------------------------------------------------------------
    emb = [o.embedding for o in one if o.embedding is not None]
    if len(emb) >= 2:
        arr = np.asarray(emb, dtype=np.float64)
        if distance is None:

            def distance(a: np.ndarray, b: np.ndarray) -> float:
                return float(np.linalg.norm(a - b))

        split_max, pair_max = IDENTITY_LIMITS.get(face_metric, IDENTITY_LIMITS["l2"])
        split = _split_distance(arr, distance)
        pair = max(float(distance(arr[i], arr[j])) for i in range(len(arr)) for j in range(i + 1, len(arr)))
        m.update(split_distance=round(split, 4), max_pair_distance=round(pair, 4))
        if split >= split_max or pair >= pair_max:
            reasons.append(
                Reason("identity_changes", "the face changes identity during the video (two people spliced)")
            )

    # 4. voice ---------------------------------------------------------------------------------
    m["has_audio"] = audio is not None
    if audio is None:
        reasons.append(Reason("no_audio", "the video has no audio track: a voice sample is required"))
    else:
        try:
            rep = check_speech(audio, source=source)
            m["voiced_seconds"] = round(rep.voiced_seconds, 2)
            m["audio_level_p95_dbfs"] = round(rep.level_p95_dbfs, 1)
            speech_ok = True
        except VoiceError as e:
            msg = str(e)
            if source and msg.startswith(f"{source}: "):
                msg = msg[len(source) + 2 :]
            reasons.append(Reason("no_speech", f"no usable speech: {msg}"))
            m["voice_error"] = type(e).__name__
    if voice_partials is not None:
        vs = _voice_split(np.asarray(voice_partials, dtype=np.float64))
        if vs is not None:
            m["voice_split"] = round(vs, 4)
            if vs < VOICE_SPLIT_MIN:
                reasons.append(Reason("voice_changes", "the voice changes speaker during the video"))

    if mouth_track is not None and audio is not None and speech_ok:
        from cameo.biometrics._avsync import sync_score

        sync = sync_score(mouth_track, audio)
        if sync is not None:
            m.update(av_sync_z=round(sync.z, 3), av_sync_peak=round(sync.peak, 3), av_sync_lag_s=round(sync.lag_s, 3))
            if sync.z < SYNC_Z_MIN:
                reasons.append(Reason("voice_not_in_sync",
                                      "the speech does not follow the mouth on screen (a dubbed video)"))

    return LivenessReport(passed=not reasons, reasons=tuple(reasons), metrics=m)


def require_live(report: LivenessReport, *, source: str | None = None) -> LivenessReport:
    """Return ``report`` if it passed; else raise :class:`LivenessFailed` with every reason.

    The exception carries the report as ``.report`` (metrics hold no biometric data).
    """
    if report.passed:
        return report
    err = LivenessFailed(
        "liveness check failed: " + "; ".join(r.message for r in report.reasons), source=source
    )
    err.report = report  # type: ignore[attr-defined]
    raise err
