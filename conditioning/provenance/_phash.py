"""A perceptual hash (64-bit DCT pHash) to check that a resolved watermark sits on the content it
was made for.

The picture is reduced to 32 x 32 luma (area averaging), its 2-D DCT taken, and the 8 x 8 lowest
frequencies but the DC term compared with their median: 63 bits plus one for the DC's sign
against the mean of the others (always 1; kept so the hash is 64 bits, 16 hex digits). Re-encoding
and resizing move a few bits; other content differs in about half of them. The threshold
:data:`MATCH_DISTANCE` is measured by ``bench/watermark.py`` on every transform it reports
(same content) against pictures cameo never made (other content).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CROPS", "MATCH_DISTANCE", "crop_hashes", "distance", "nearest_crop", "phash"]

MATCH_DISTANCE = 6  # Hamming distance (of 64) at or under which two hashes are the same content
CROPS = (0.0, 0.05, 0.1, 0.15, 0.2)  # centred crops (fraction of each side removed) kept on record


def phash(rgb: np.ndarray) -> str:
    """The 64-bit pHash of an H x W x 3 (or 4, or grey H x W) uint8 picture, as 16 hex digits."""
    import cv2

    a = np.asarray(rgb)
    y = a.astype(np.float32) if a.ndim == 2 else a[..., :3].astype(np.float32) @ np.array(
        [0.299, 0.587, 0.114], np.float32)
    small = cv2.resize(y, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    ac = low[1:]
    bits = np.concatenate([[1], (ac > np.median(ac)).astype(int)])
    return f"{int(''.join(map(str, bits)), 2):016x}"


def distance(a: str, b: str) -> int:
    """Hamming distance between two hashes from :func:`phash`."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _centre_crop(a: np.ndarray, fraction: float) -> np.ndarray:
    h, w = a.shape[:2]
    dy, dx = round(h * fraction / 2), round(w * fraction / 2)
    return a[dy : h - dy, dx : w - dx] if fraction > 0 else a


def crop_hashes(rgb: np.ndarray) -> list[str]:
    """The pHash of the picture and of its centred crops (:data:`CROPS`), for the record: a
    cropped copy is compared with the crop the watermark reader measured, one comparison only
    (comparing with all of them would multiply the chance of a false match)."""
    return [phash(_centre_crop(rgb, f)) for f in CROPS]


def nearest_crop(fraction: float) -> int:
    """Index into :data:`CROPS` of the crop closest to ``fraction``."""
    return min(range(len(CROPS)), key=lambda i: abs(CROPS[i] - fraction))
