"""Audio-visual synchrony: does the speech come from the mouth on screen?

Two pieces: :func:`mouth_track` decodes the first seconds of a video at its full frame rate and
measures the inner-lip opening on every frame (dlib's 68-point shape, which
``face_recognition_models`` ships); :func:`sync_score` compares that track with the speech
envelope of the audio track, with a lag search, against the same comparison at many wrong
alignments of the same audio (circular shifts of >= 1 s). The score is a z value: how far the
best correlation within +-0.32 s of the true alignment stands above the shifted ones. A mouth that
speaks these words scores well above 0; a face dubbed with someone else's speech correlates with
its audio no better than with a shifted copy of it (z near or below 0).

Features (chosen on DEV ``videos/`` and ``videos/extra/``, see :mod:`cameo.biometrics._liveness`): mouth
opening / inter-ocular distance; the audio's 300-3400 Hz band amplitude over each video frame;
both detrended by a 1 s moving average; Pearson correlation at lags of +-8 frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from typing import Any

__all__ = ["MouthTrack", "SyncReport", "mouth_track", "sync_score"]

#: Seconds of video read for the mouth track (the start of the clip; every frame in it).
TRACK_SECONDS = 10.0
#: Lag window searched around the true alignment, seconds.
MAX_LAG_S = 0.32
#: Wrong alignments start this far from the true one, seconds.
NULL_MIN_SHIFT_S = 1.0
#: A verdict needs a face on this share of the frames and at least this many seconds.
MIN_COVERAGE = 0.8
MIN_TRACK_S = 3.0


@dataclass(frozen=True)
class MouthTrack:
    """Mouth opening (inter-ocular units, NaN where no face) at each frame time."""

    times: np.ndarray = field(repr=False)
    opening: np.ndarray = field(repr=False)
    fps: float

    @property
    def coverage(self) -> float:
        return float(np.mean(np.isfinite(self.opening))) if self.opening.size else 0.0


@dataclass(frozen=True)
class SyncReport:
    z: float  # true-alignment peak correlation against the shifted ones, in their std units
    peak: float  # best correlation within +-MAX_LAG_S
    lag_s: float  # where it is (positive: the mouth follows the sound)
    null_mean: float
    null_sd: float


def mouth_track(path: str | os.PathLike[str], *, seconds: float = TRACK_SECONDS) -> MouthTrack:
    """Every frame of the first ``seconds`` of a video: dlib HOG detection (no upsampling, the
    largest face) and the 68-point shape, reduced to the inner-lip opening.
    Raises :class:`~cameo._errors.MediaError` for a video that does not decode."""
    from ._face import DlibFaceEncoder
    from ._liveness import _mouth_opening
    from ._media import load_video

    clip = load_video(path, every_n=1, max_frames=max(1, int(seconds * 30)), with_audio=False)
    fps = clip.fps or 25.0
    models = DlibFaceEncoder()._models()
    det: Any = models["det"]
    sp68: Any = models["sp68"]
    times, opening = [], []
    for fr in clip.frames:
        if fr.time >= seconds:
            break
        rects = det(fr.rgb, 0)
        times.append(fr.time)
        if len(rects) == 0:
            opening.append(np.nan)
            continue
        r = max(rects, key=lambda r: r.width() * r.height())
        s = sp68(fr.rgb, r)
        opening.append(_mouth_opening(np.array([[p.x, p.y] for p in s.parts()], dtype=np.float64)))
    return MouthTrack(np.asarray(times), np.asarray(opening, dtype=np.float64), float(fps))


def _fill(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64).copy()
    bad = ~np.isfinite(v)
    if bad.all():
        return np.zeros_like(v)
    if bad.any():
        v[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), v[~bad])
    return v


def _detrend(v: np.ndarray, fps: float, win_s: float = 1.0) -> np.ndarray:
    w = max(3, int(win_s * fps) | 1)
    pad = np.pad(v, w // 2, mode="edge")
    return v - np.convolve(pad, np.ones(w) / w, mode="valid")


def _envelope(audio: np.ndarray, times: np.ndarray, fps: float, sr: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [300, 3400], btype="band", fs=sr, output="sos")
    x = sosfiltfilt(sos, np.asarray(audio, dtype=np.float64))
    half = int(sr / fps / 2) + int(0.01 * sr)
    db = np.full(len(times), np.nan)
    for i, t in enumerate(times):
        c = int(t * sr)
        seg = x[max(0, c - half) : c + half]
        if seg.size:
            db[i] = 10.0 * np.log10(np.mean(seg * seg) + 1e-10)
    db = _fill(db)
    db = np.maximum(db, np.percentile(db, 95) - 40.0)  # a floor 40 dB under the loud frames
    return 10.0 ** (db / 20.0)


def _peak(a: np.ndarray, b: np.ndarray, maxlag: int) -> tuple[float, int]:
    best, at = -np.inf, 0
    for lag in range(-maxlag, maxlag + 1):
        x, y = (a[lag:], b[: len(b) - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        if len(x) < 20 or x.std() == 0 or y.std() == 0:
            continue
        c = float(np.corrcoef(x, y)[0, 1])
        if c > best:
            best, at = c, lag
    return best, at


def sync_score(track: MouthTrack, audio: np.ndarray, *, sample_rate: int = 16000) -> SyncReport | None:
    """How well the mouth follows this audio (see the module docstring), or None when the track
    is too short or too often without a face to judge."""
    n = len(track.times)
    if n == 0 or track.coverage < MIN_COVERAGE or n / track.fps < MIN_TRACK_S:
        return None
    fps = track.fps
    m = _detrend(_fill(track.opening), fps)
    e = _detrend(_envelope(audio, track.times, fps, sample_rate), fps)
    if m.std() == 0 or e.std() == 0:
        return None
    maxlag = max(1, int(round(MAX_LAG_S * fps)))
    true, lag = _peak(m, e, maxlag)
    lo = int(NULL_MIN_SHIFT_S * fps)
    null = np.array([_peak(m, np.roll(e, s), maxlag)[0] for s in range(lo, n - lo, 3)])
    null = null[np.isfinite(null)]
    if null.size < 5 or not np.isfinite(true):
        return None
    sd = max(float(null.std()), 1e-6)
    return SyncReport(z=(true - float(null.mean())) / sd, peak=true, lag_s=lag / fps,
                      null_mean=float(null.mean()), null_sd=sd)
