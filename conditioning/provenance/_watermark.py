"""An invisible watermark on image outputs: a 32-bit output identifier the registry resolves.

Why this method (measured by ``bench/watermark.py``; see the README)
--------------------------------------------------------------------
invisible-watermark's rivaGan (ONNX, 32 bits) is near perfect on photographs, but on the
smooth procedural images of ``studio-v1`` it already loses 1-12 of its 32 bits with no
transform at all (mean 3.2), 12 after JPEG quality 50, and costs ~350 ms an image on these 2
cores (some 300 times the C2PA signature); its dwtDct modes fail on resizing and JPEG. So the
registry embeds its own classic mark, built for those conditions:

**Tiled spread spectrum** (``org.cameo.tiled-ss.1``). A tile of 64 x 64 cells carries the 32
bits as the signs of 32 orthonormal, band-limited pseudo-random patterns (frequencies 2-9
cycles per tile, drawn once from a fixed seed), plus a 33rd, the pilot, always positive; the
tile is repeated over the picture at a period of a quarter of the picture's shorter side, and
added to the luma (the same amount to R, G and B, so colours keep their hue), weighted up
where the picture is busy and down where it is flat. Embedding is *informed*: the picture's own
correlation with each pattern is measured and cancelled (improved spread spectrum), so a
smooth or a busy picture reads alike.

* **Resizing** does not move it: the period is a fraction of the picture, so a resized copy is
  read at the same fraction.
* **Cropping** keeps whole periods of the pattern; the reader folds the picture into one tile
  (averaging every period, which also averages the picture itself away) and finds the pattern's
  offset by cross-correlation at every cyclic shift (FFT), and the period by a short search
  over the crop fractions 0-25%.
* **JPEG** keeps it: the patterns' frequencies (at most 0.14 cycle a pixel at the embedding
  size) sit in the coefficients JPEG quantises least.
* **Detection is a test**, not only a decode: the pilot and the bits, voting together, must
  peak at one shift by :data:`DETECT_THRESHOLD` standard deviations over all the others (set on
  pictures cameo never made, whose peaks stay under ~5). The registry never trusts the bits on
  their own: an identifier must also resolve to a signed record whose perceptual hash matches.

What it is not: an authenticator. The pattern is public (anyone with this code can read,
remove or copy it); it is a pointer into the registry's own records, and what the pointer
resolves to is checked against the content (a perceptual hash, :mod:`conditioning._phash`)
before anything is believed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

__all__ = [
    "ALGORITHM",
    "BITS",
    "DETECT_THRESHOLD",
    "Detection",
    "detect",
    "detect_with_margins",
    "embed",
]

ALGORITHM = "org.cameo.tiled-ss.1"
BITS = 32
TILE = 64  # cells of the canonical tile
PERIODS = 4  # tile periods along the picture's shorter side
STRENGTH = 2.6  # luma levels (of 255): the mark's RMS before masking
PILOT = 8.0**0.5  # the pilot's amplitude against one bit's: a fifth of the mark's energy
DETECT_THRESHOLD = 6.0  # the offset vote's peak, in standard deviations over every other shift
MIN_SIDE = 64  # smaller pictures carry too few periods to be read
_SEED = 0x63616D656F  # "cameo"
_CROP_STEPS = np.linspace(1.0, 1.0 / 0.75, 15)  # period / (shorter side / PERIODS) tried when reading


@functools.cache
def _patterns() -> np.ndarray:
    """33 orthonormal band-limited patterns on the TILE x TILE torus, shape (BITS + 1, TILE, TILE):
    the pilot (index 0, always positive: it finds the offset and says whether a mark is there),
    then one per bit."""
    rng = np.random.default_rng(_SEED)
    f = np.fft.fftfreq(TILE) * TILE
    radius = np.hypot(f[:, None], f[None, :])
    band = (radius >= 2.0) & (radius <= 9.0)
    basis: list[np.ndarray] = []
    while len(basis) < 3 * (BITS + 1):
        spec = np.zeros((TILE, TILE), complex)
        spec[band] = rng.normal(size=band.sum()) + 1j * rng.normal(size=band.sum())
        basis.append(np.fft.ifft2(spec).real.ravel())
    q, _ = np.linalg.qr(np.array(basis).T)  # orthonormal columns, still inside the band
    return np.ascontiguousarray(q[:, : BITS + 1].T.reshape(BITS + 1, TILE, TILE))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = a.shape[:2]
    interp = cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR
    return cv2.resize(a, size, interpolation=interp)


def _period(h: int, w: int) -> float:
    return min(h, w) / PERIODS


def _field(h: int, w: int, coefficients: np.ndarray, period: float) -> np.ndarray:
    """The mark at picture size: the tile of weighted patterns, repeated every ``period`` pixels."""
    import cv2

    tile = np.tensordot(coefficients, _patterns(), axes=1).astype(np.float32) * _NORM
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = TILE / period
    return cv2.remap(np.tile(tile, (3, 3)), xs * scale % TILE + TILE, ys * scale % TILE + TILE,
                     interpolation=cv2.INTER_CUBIC)


_NORM = TILE / (BITS + PILOT**2) ** 0.5  # a tile of nominal coefficients has unit RMS


def _mask(y: np.ndarray) -> np.ndarray:
    """Local activity weighting: 0.6 on flat areas, up to 1.8 on texture and edges."""
    import cv2

    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    act: Any = cv2.GaussianBlur(np.hypot(gx, gy), (0, 0), 3.0)
    act = act / (float(np.median(act)) + 4.0)
    return np.clip(0.6 + 0.6 * act, 0.6, 1.8).astype(np.float32)


def _apply(rgb: np.ndarray, delta: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    out[..., :3] = np.clip(np.rint(rgb[..., :3].astype(np.float32) + delta[..., None]), 0, 255).astype(np.uint8)
    return out


def embed(rgb: np.ndarray, identifier: int) -> np.ndarray:
    """The picture (H x W x 3 or 4 uint8, RGB[A]) with ``identifier`` (0 <= id < 2**32) embedded.
    Raises ValueError for a picture too small to carry it.

    Informed embedding (improved spread spectrum): the picture's own correlation with each
    pattern is measured first and cancelled, so what the reader sees is the mark, not the
    picture; one correction pass after quantisation to 8 bits evens the bits out."""
    if not 0 <= identifier < 2**BITS:
        raise ValueError("identifier must fit in 32 bits")
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError("expected an H x W x 3 (or 4) uint8 picture")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"picture smaller than {MIN_SIDE} px: too small to carry a watermark")
    signs = np.concatenate([[PILOT], 2.0 * _bits(identifier) - 1.0])
    y = _luma(rgb)
    base = STRENGTH * _mask(y)
    period = _period(h, w)
    host = _read_at(y, 1.0, 0)
    a = signs.copy()
    out = _apply(rgb, base * _field(h, w, a, period))
    for _ in range(2):
        got = _read_at(_luma(out), 1.0, 0)
        gain = float(np.median((got - host) / a)) if np.all(a != 0) else 1.0
        gain = max(gain, 1e-3)
        # the coefficients that make each correlation land on its nominal value (host cancelled),
        # kept on the right side of zero and within 3x the nominal amplitude (bounded distortion)
        want = signs * gain
        a = a + (want - got) / gain
        a = np.sign(signs) * np.clip(np.abs(a) * (np.sign(a) == np.sign(signs)), 0.5 * np.abs(signs),
                                     3.0 * np.abs(signs))
        out = _apply(rgb, base * _field(h, w, a, period))
    return out


def _bits(identifier: int) -> np.ndarray:
    return np.array([(identifier >> (BITS - 1 - i)) & 1 for i in range(BITS)], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Detection:
    """What the reader found. ``present`` is the test's verdict; ``identifier`` is meaningful only
    when present. ``score`` is the peak-to-mean correlation energy; ``margins`` the smallest and
    mean |correlation| per bit relative to their spread (a confidence for each bit)."""

    present: bool
    identifier: int
    score: float
    min_margin: float
    crop: float  # the crop fraction at which the mark was read (0 = the whole period grid)

    def as_dict(self) -> dict[str, Any]:
        return {"present": self.present, "identifier": f"{self.identifier:08x}", "score": round(self.score, 2),
                "min_margin": round(self.min_margin, 3), "crop": round(self.crop, 3)}


def _highpass(y: np.ndarray) -> np.ndarray:
    import cv2

    return y - cv2.GaussianBlur(y, (0, 0), 6.0)


def _fold(y: np.ndarray) -> np.ndarray:
    """Sum of every whole TILE x TILE period (the picture averages away, the mark adds up)."""
    h, w = y.shape
    nh, nw = h // TILE, w // TILE
    if nh == 0 or nw == 0:
        return np.zeros((TILE, TILE), np.float32)
    core = y[: nh * TILE, : nw * TILE].reshape(nh, TILE, nw, TILE)
    # each period's own mean and scale out, so a bright or busy region does not dominate
    core = core - core.mean(axis=(1, 3), keepdims=True)
    scale = core.std(axis=(1, 3), keepdims=True) + 1.0
    return (core / scale).sum(axis=(0, 2))


def _canonical(y: np.ndarray, ratio: float) -> np.ndarray:
    h, w = y.shape
    scale = TILE / (_period(h, w) * ratio)
    size = (max(TILE, round(w * scale)), max(TILE, round(h * scale)))
    return _fold(_highpass(_resize(y, size)))


def _read_at(y: np.ndarray, ratio: float, shift: int) -> np.ndarray:
    """Every pattern's correlation (pilot first) at one cyclic shift."""
    f = _canonical(y, ratio)
    corr = np.fft.ifft2(np.fft.fft2(f)[None] * _pattern_spectra()).real.reshape(BITS + 1, -1)
    return corr[:, shift]


def _read(y: np.ndarray, ratio: float) -> tuple[float, np.ndarray]:
    """The pilot's peak (in standard deviations over every cyclic shift) and the bits'
    correlations at that shift, reading at a period of ``ratio`` * (shorter side / PERIODS)."""
    f = _canonical(y, ratio)
    spec = np.fft.fft2(f)
    corr = np.fft.ifft2(spec[None] * _pattern_spectra()).real.reshape(BITS + 1, -1)  # every shift
    # the pilot (signed) and every bit (either sign) vote for the offset
    stat = PILOT * corr[0] + np.abs(corr[1:]).sum(axis=0)
    peak = int(np.argmax(stat))
    score = float((stat[peak] - stat.mean()) / (stat.std() + 1e-12))
    return score, corr[1:, peak]


@functools.cache
def _pattern_spectra() -> np.ndarray:
    return np.conj(np.fft.fft2(_patterns()))


def detect(rgb: np.ndarray) -> Detection:
    """Read the mark from a picture (H x W x 3 or 4 uint8). Never raises on a picture that has
    none; a picture smaller than :data:`MIN_SIDE` reads as absent."""
    return detect_with_margins(rgb)[0]


def detect_with_margins(rgb: np.ndarray) -> tuple[Detection, np.ndarray | None]:
    """:func:`detect`, and each bit's |correlation| (how sure the reader is of it; None when
    nothing could be read)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE // 2:
        return Detection(False, 0, 0.0, 0.0, 0.0), None
    y = _luma(rgb)
    best: tuple[float, np.ndarray, float] | None = None
    step = float(_CROP_STEPS[1] - _CROP_STEPS[0])
    for ratio in _CROP_STEPS:
        score, c = _read(y, float(ratio))
        if best is None or score > best[0]:
            best = (score, c, float(ratio))
    assert best is not None
    for ratio in best[2] + step * np.array([-0.5, -0.25, 0.25, 0.5]):  # refine around the best
        score, c = _read(y, float(ratio))
        if score > best[0]:
            best = (score, c, float(ratio))
    score, c, ratio = best
    bits = (c > 0).astype(int)
    identifier = int("".join(map(str, bits)), 2)
    spread = float(np.sqrt(np.mean(c**2))) + 1e-12
    return (Detection(score >= DETECT_THRESHOLD, identifier, score, float(np.min(np.abs(c)) / spread),
                      1.0 - 1.0 / ratio), np.abs(c))
