"""Who is this? Searching probes against every enrolled template (and the protected list) of the
same encoder. Used by `cameo match`, by enrollment (is this person already someone else's cameo?)
and by the gate's screening of request media and outputs.

The directory is built in memory from decrypted templates and never written to disk. Scores are
always reported (dlib's known weakness: poor separation on some demographics), with the verdict
from the encoder's calibrated threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from .registry._cameos import load_protected, load_vectors
from .registry._vault import Vault

#: Bytes of a file's head that :func:`sniff` looks at.
SNIFF_BYTES = 64


@dataclass(frozen=True)
class MediaType:
    """What a file's bytes are (never what its name says): ``kind`` is image, audio or video;
    ``mime`` is handed to readers that need one (c2pa); ``ext`` names a staged copy so that
    decoders which look at the suffix see the truth."""

    kind: str
    mime: str
    ext: str
    weak: bool = field(default=False, compare=False)
    """Recognised by a short frame-sync pattern only (raw MPEG audio, ADTS), which random bytes
    can show by chance: only a decoder confirms it."""


_MPEG_AUDIO = MediaType("audio", "audio/mpeg", ".mp3")
_MPEG_FRAMES = MediaType("audio", "audio/mpeg", ".mp3", weak=True)
_BMFF_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_BMFF_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
_BMP_HEADERS = {12, 40, 52, 56, 64, 108, 124}


def sniff(head: bytes) -> MediaType | None:
    """The media type of a file from its first :data:`SNIFF_BYTES` bytes (magic numbers), or
    None when they are not an image, audio or video format screening can decode.

    image: JPEG, PNG, GIF, BMP, WebP, TIFF; audio: RIFF/WAVE, AIFF, FLAC, Ogg, MP3 (ID3 or an
    MPEG audio frame), AAC (ADTS), M4A (ISO BMFF with an audio brand); video: other ISO BMFF
    (MP4, MOV), Matroska/WebM, AVI, Ogg with Theora. A decoder confirms later: bytes that only
    look like a format fail to decode and are refused there.
    """
    h = bytes(head[:SNIFF_BYTES])
    if h.startswith(b"\xff\xd8\xff"):
        return MediaType("image", "image/jpeg", ".jpg")
    if h.startswith(b"\x89PNG"):
        return MediaType("image", "image/png", ".png")
    if h.startswith((b"GIF87a", b"GIF89a")):
        return MediaType("image", "image/gif", ".gif")
    if h.startswith((b"II*\x00", b"MM\x00*")):
        return MediaType("image", "image/tiff", ".tif")
    if h.startswith(b"BM") and len(h) >= 18 and int.from_bytes(h[14:18], "little") in _BMP_HEADERS:
        return MediaType("image", "image/bmp", ".bmp")
    if h.startswith(b"RIFF") and len(h) >= 12:
        form = h[8:12]
        if form == b"WEBP":
            return MediaType("image", "image/webp", ".webp")
        if form == b"WAVE":
            return MediaType("audio", "audio/wav", ".wav")
        if form == b"AVI ":
            return MediaType("video", "video/x-msvideo", ".avi")
        return None
    if h.startswith(b"FORM") and h[8:12] in (b"AIFF", b"AIFC"):
        return MediaType("audio", "audio/aiff", ".aiff")
    if h.startswith(b"fLaC"):
        return MediaType("audio", "audio/flac", ".flac")
    if h.startswith(b"OggS"):
        if b"\x80theora" in h:
            return MediaType("video", "video/ogg", ".ogv")
        return MediaType("audio", "audio/ogg", ".ogg")
    if h.startswith(b"ID3"):
        return _MPEG_AUDIO
    if len(h) >= 12 and h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in _BMFF_AUDIO_BRANDS:
            return MediaType("audio", "audio/mp4", ".m4a")
        if brand in _BMFF_IMAGE_BRANDS:
            return None  # HEIF/AVIF stills: no decoder here to screen them with
        if brand == b"qt  ":
            return MediaType("video", "video/quicktime", ".mov")
        return MediaType("video", "video/mp4", ".mp4")
    if h.startswith(b"\x1a\x45\xdf\xa3"):
        if b"webm" in h:
            return MediaType("video", "video/webm", ".webm")
        return MediaType("video", "video/x-matroska", ".mkv")
    if len(h) >= 3 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0:
        layer, rate, freq = (h[1] >> 1) & 3, h[2] >> 4, (h[2] >> 2) & 3
        if layer == 0 and h[1] & 0xF6 == 0xF0 and freq != 3:  # ADTS AAC (sync 12 bits, layer 00)
            return MediaType("audio", "audio/aac", ".aac", weak=True)
        if layer != 0 and rate not in (0, 15) and freq != 3 and (h[1] >> 3) & 3 != 1:
            return _MPEG_FRAMES
    return None


def sniff_file(path: Path) -> MediaType | None:
    """:func:`sniff` on a file's head. Raises OSError."""
    with open(path, "rb") as f:
        return sniff(f.read(SNIFF_BYTES))


def media_kind(path: Path) -> str:
    """``image``, ``audio``, ``video`` by the file's bytes (its name is not looked at), or
    ``unknown`` (also for a file that cannot be read)."""
    try:
        found = sniff_file(path)
    except OSError:
        return "unknown"
    return found.kind if found else "unknown"


@dataclass(frozen=True)
class Hit:
    """One candidate for a probe: who (a cameo handle or a protected-list label), the score in the
    encoder's own terms and whether it passes the operating point of the search's use. Calibrated
    encoders (voices) also give the normalised score and the verdict at every operating point."""

    who: str
    kind: str  # "cameo" | "protected"
    modality: str
    encoder: str
    score: float
    metric: str  # "distance" (lower is closer) | "cosine" (higher is closer)
    match: bool
    normalised: float | None = None  # S-norm against the encoder's cohort
    decisions: dict[str, bool] | None = field(default=None, compare=False)
    use: str = "screening"

    def as_dict(self) -> dict[str, Any]:
        d = {"who": self.who, "kind": self.kind, "modality": self.modality, "encoder": self.encoder,
             "score": round(self.score, 4), "metric": self.metric, "match": self.match}
        if self.normalised is not None:
            d.update(raw=round(self.score, 4), snorm=round(self.normalised, 3), use=self.use,
                     decisions=dict(self.decisions or {}))
        return d


@dataclass
class LikenessDirectory:
    """Decrypted templates in memory, one vector index per (modality, encoder): exact search for a
    small registry, IVF above 50k templates (measured: 1M templates, 3 ms a query, recall@1 0.996)."""

    entries: list[tuple[str, str, str, str, np.ndarray]] = field(default_factory=list, repr=False)
    candidates: int = 10
    _indexes: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, session: Session, vault: Vault, *, exclude: str | None = None) -> LikenessDirectory:
        rows = [(h, "cameo", m, e, v) for h, m, e, v in load_vectors(session, vault) if h != exclude]
        rows += [(label, "protected", m, e, v) for label, m, e, v in load_protected(session, vault)]
        return cls(rows)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"LikenessDirectory({len(self.entries)} templates)"

    def _index(self, modality: str, encoder: Any) -> Any:
        from .biometrics._index import VectorIndex

        key = (modality, encoder.encoder_id.id)
        idx = self._indexes.get(key)
        if idx is None:
            rows = [(i, v) for i, (_, _, mod, enc, v) in enumerate(self.entries) if mod == key[0] and enc == key[1]]
            idx = VectorIndex(len(rows[0][1]) if rows else int(encoder.dim), encoder.metric)
            if rows:
                idx.add([str(i) for i, _ in rows], np.stack([v for _, v in rows]).astype(np.float32))
            self._indexes[key] = idx
        return idx

    def search(self, modality: str, encoder: Any, vector: np.ndarray, *, use: str = "screening") -> list[Hit]:
        """The nearest templates of this modality and encoder (never another encoder's), closest
        first, each scored by the encoder itself and judged at the operating point of ``use``
        (``screening``: the gate and ``cameo match``; ``dedup``: enrollment's identity check).
        Encoders with a cohort (``score``) report raw and normalised scores for every hit."""
        eid = encoder.encoder_id.id
        cos = encoder.metric == "ip"
        idx = self._index(modality, encoder)
        if len(idx) == 0:
            return []
        near = idx.search(np.asarray(vector, dtype=np.float32), k=min(self.candidates, len(idx)))
        calibrated = hasattr(encoder, "score") and hasattr(encoder, "operating_points")
        hits = []
        for h in near:
            who, kind, mod, enc, vec = self.entries[int(h.id)]
            if calibrated:
                sc = encoder.score(vec, vector)
                hits.append(Hit(who, kind, modality, eid, sc.raw, "cosine", bool(sc.decisions[use]),
                                sc.snorm, sc.decisions, use))
                continue
            score = encoder.similarity(vector, vec) if cos else encoder.distance(vector, vec)
            hits.append(Hit(who, kind, modality, eid, score, "cosine" if cos else "distance",
                            bool(encoder.matches(vector, vec)), use=use))
        hits.sort(key=lambda h: -h.score if cos else h.score)
        return hits


class Encoders:
    """The encoders in use, loaded lazily: dlib (default) or an insightface pack for faces,
    Resemblyzer for voices."""

    def __init__(self, face_model: Path | None = None) -> None:
        env = os.environ.get("CAMEO_FACE_MODEL")
        self.face_model = face_model or (Path(env) if env else None)
        self._face: Any = None
        self._voice: Any = None

    @property
    def face(self) -> Any:
        if self._face is None:
            from .biometrics._pipeline import DlibFaceEncoder, InsightFaceEncoder

            self._face = InsightFaceEncoder(self.face_model) if self.face_model else DlibFaceEncoder()
        return self._face

    @property
    def voice(self) -> Any:
        if self._voice is None:
            from .biometrics._pipeline import ResemblyzerVoiceEncoder

            self._voice = ResemblyzerVoiceEncoder()
        return self._voice


#: Screening looks for faces at each right angle: a face turned 90 or 180 degrees (or an image
#: saved without its orientation tag) is still a face. Enrollment does not (it wants upright
#: faces and refuses the rest).
ROTATIONS = (0, 1, 2, 3)  # quarter turns, counter-clockwise (numpy.rot90)

#: Before detection an image whose short side is below this is scaled up to it (bicubic), and
#: dlib's detector then runs with one upsampling step (dlib's HOG window is 80 px, so one step
#: finds faces down to ~40 px of the scaled image). The floor this gives, measured on the DEV
#: photos (faces shrunk until screening stops finding or matching them; see
#: tests/test_screen_content.py::test_the_face_size_floor_of_screening): in a picture whose short
#: side is under 320 px, faces are found down to ~12 px wide and still match their cameo down to
#: ~16 px (distance 0.50-0.56 against 0.6); 20 px is the stated floor (0.44-0.45). In larger
#: pictures, which are not scaled, the floor is ~40 px, and ~80 px above
#: :data:`SCREEN_UPSAMPLE_MAX_PIXELS` (detection without upsampling, for time).
SCREEN_MIN_SIDE = 320
#: Above this many pixels (after scaling) detection runs without dlib's upsampling (time).
SCREEN_UPSAMPLE_MAX_PIXELS = 2_500_000
#: Frames of an animated image (GIF, WebP, TIFF pages) looked at, spread over the sequence.
MAX_IMAGE_FRAMES = 8


def _scaled(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    short = min(h, w)
    if short >= SCREEN_MIN_SIDE:
        return rgb
    f = SCREEN_MIN_SIDE / short
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC))


def screen_faces(rgb: np.ndarray, encoder: Any, *, source: str,
                 rotations: tuple[int, ...] = ROTATIONS) -> list[np.ndarray]:
    """Embeddings of every face screening finds in one picture: small pictures scaled up, each
    right-angle rotation searched, dlib's detector upsampled once (the aggressive search that
    screening wants and enrollment does not)."""
    from .biometrics._face import DlibFaceEncoder

    img = _scaled(rgb)
    out: list[np.ndarray] = []
    for k in rotations:
        turned = np.ascontiguousarray(np.rot90(img, k)) if k else img
        if isinstance(encoder, DlibFaceEncoder):
            up = 1 if turned.shape[0] * turned.shape[1] <= SCREEN_UPSAMPLE_MAX_PIXELS else 0
            found = encoder.detect(turned, source=source, upsample=up)
            if not found and up == 0:
                found = encoder.detect(turned, source=source, upsample=1)
        else:
            found = encoder.detect(turned, source=source)
        for ob in found:
            emb = encoder.embed(turned, ob).embedding
            if emb is not None:
                out.append(emb)
    return out


def _image_frames(path: Path) -> list[np.ndarray]:
    """The first frame as :func:`cameo.biometrics._media.load_image` decodes it (EXIF orientation applied),
    then the further frames of an animated image, up to :data:`MAX_IMAGE_FRAMES`."""
    from PIL import Image

    from ._errors import MediaError
    from .biometrics._media import load_image

    frames = [load_image(path)]
    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1) or 1)
            if n > 1:
                for idx in sorted(set(np.linspace(1, n - 1, min(MAX_IMAGE_FRAMES - 1, n - 1)).round().astype(int))):
                    im.seek(int(idx))
                    frames.append(np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8)))
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise MediaError(f"image cannot be decoded ({type(e).__name__})", source=path.name) from e
    return frames


def probe(path: Path, encoders: Encoders, *, max_frames: int = 8, name: str | None = None) -> dict[str, list[np.ndarray]]:
    """Embeddings found in a media file, which is recognised by its bytes (:func:`sniff`), not
    its name: every face of an image (each frame of an animated one), faces of sampled video
    frames, the voice of an audio (or video) track when it holds enough speech. Faces are
    searched as :func:`screen_faces` does (video frames: all four right angles until a frame
    shows a face, then the angles faces were found at). ``name`` is how the file is called in
    messages.

    Raises :class:`~cameo._errors.MediaError` for a file that is not recognisable media or does
    not decode: screening refuses what it cannot look at."""
    from ._errors import EnrollmentError, MediaError
    from .biometrics._media import load_video
    from .biometrics._pipeline import embed_voice_file, voice_sample

    shown = name or path.name
    try:
        found = sniff_file(path)
    except OSError as e:
        raise MediaError(f"cannot read the file ({e.strerror})", source=shown) from e
    if found is None:
        raise MediaError("not a recognised image, audio or video file", source=shown)
    out: dict[str, list[np.ndarray]] = {"face": [], "voice": []}
    if found.kind == "image":
        for i, rgb in enumerate(_image_frames(path)):
            out["face"] += screen_faces(rgb, encoders.face, source=shown if i == 0 else f"{shown}#frame {i}")
        return out
    if found.kind == "video" and _has_video_stream(path, shown):
        clip = load_video(path, max_frames=max_frames)
        # every right angle until a frame shows a face (a clip recorded sideways), then only the
        # angles faces were found at: one orientation per clip, four times cheaper per frame
        turns: tuple[int, ...] = ROTATIONS
        for fr in clip.frames:
            found_at = []
            for k in turns:
                embs = screen_faces(fr.rgb, encoders.face, source=f"{shown}#frame {fr.index}", rotations=(k,))
                out["face"] += embs
                if embs:
                    found_at.append(k)
            if found_at and turns == ROTATIONS:
                turns = tuple(found_at)
        if clip.audio is not None:
            try:
                out["voice"] = [voice_sample(clip.audio, encoders.voice, source=shown).embedding]
            except EnrollmentError:
                pass  # no usable speech in the track: nothing to search for
        return out
    try:  # audio, or a video container that holds only sound
        out["voice"] = [embed_voice_file(path, encoders.voice)]
    except EnrollmentError as e:
        if isinstance(e, MediaError):
            raise
    return out


def _has_video_stream(path: Path, shown: str) -> bool:
    import av

    from ._errors import MediaError

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.video)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"media cannot be opened ({type(e).__name__})", source=shown) from e
