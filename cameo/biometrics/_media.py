"""Media loading: images, audio clips and videos, decoded into plain numpy arrays.

Everything that comes out of here is in one canonical form, whatever went in:

- images: RGB ``uint8`` arrays, shape ``(H, W, 3)``, C-contiguous, EXIF orientation applied;
- audio: ``float32`` mono samples at :data:`SAMPLE_RATE` (16 kHz), whatever the file's channel
  layout; a rate above 16 kHz is resampled down (resemblyzer gives a wrong embedding for 44.1 kHz
  audio it is not told about), a rate below is refused with
  :class:`~cameo._errors.SampleRateTooLow` (resampling up adds nothing that was never recorded,
  and the embedding of such a clip does not match the same speaker recorded at 16 kHz);
- video: a list of :class:`VideoFrame` (RGB frame + timestamp) sampled over the clip, and the
  audio track in the audio form above, or ``None`` when the container has no audio stream.

Any decoder failure (missing file, truncated file, not an image, no video stream, ...) becomes a
:class:`~cameo._errors.MediaError` naming the file; the decoder's own exception is chained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from cameo._errors import MediaError, SampleRateTooLow

__all__ = [
    "SAMPLE_RATE",
    "ProgressCallback",
    "VideoClip",
    "VideoFrame",
    "load_audio",
    "load_image",
    "load_video",
    "resample",
]

log = logging.getLogger(__name__)

#: Sample rate of every audio array this module returns (the rate resemblyzer was trained at).
SAMPLE_RATE = 16_000

#: ``progress(done, total)``: called during long decodes; ``total`` is an estimate for videos.
ProgressCallback = Callable[[int, int], None]

#: Images above this many pixels are refused before decoding (decompression-bomb guard: 8k x 8k).
MAX_IMAGE_PIXELS = 64_000_000

_AUDIO_SUFFIXES_SOUNDFILE = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64"}


def _name(path: str | os.PathLike[str]) -> str:
    return Path(path).name


def _check_rate(rate: int, name: str, what: str = "audio") -> int:
    """The native rate of an audio stream, refused below :data:`SAMPLE_RATE` (16 kHz)."""
    if rate < SAMPLE_RATE:
        raise SampleRateTooLow(
            f"{what} recorded at {rate} Hz; voice needs at least {SAMPLE_RATE} Hz "
            "(upsampling cannot restore what was never recorded)", source=name)
    return rate


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MediaError("file not found or not a regular file", source=_name(p))
    if p.stat().st_size == 0:
        raise MediaError("file is empty", source=_name(p))
    return p


# -- images -------------------------------------------------------------------------------------
def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array ``(H, W, 3)`` with EXIF orientation applied.

    Grey, palette, CMYK and alpha images are converted to RGB (alpha is dropped).
    Raises :class:`MediaError` for a missing, empty, truncated or non-image file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _check_file(path)
    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"image too large ({im.width}x{im.height} pixels)", source=p.name)
            im.load()  # force a full decode now: truncated files fail here, not later
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        raise MediaError("not an image (unrecognised format)", source=p.name) from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"image cannot be decoded ({type(e).__name__})", source=p.name) from e
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise MediaError(f"unexpected image shape {arr.shape}", source=p.name)
    return np.ascontiguousarray(arr)


# -- audio --------------------------------------------------------------------------------------
def resample(samples: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float samples to ``target_sr`` (soxr HQ when present, else scipy polyphase)."""
    x = np.asarray(samples, dtype=np.float32)
    if orig_sr == target_sr or x.size == 0:
        return x
    if orig_sr <= 0:
        raise ValueError(f"invalid sample rate {orig_sr}")
    try:
        import soxr

        return np.asarray(soxr.resample(x, orig_sr, target_sr, quality="HQ"), dtype=np.float32)
    except ImportError:  # pragma: no cover - soxr ships with librosa, a resemblyzer dependency
        from scipy.signal import resample_poly

        frac = Fraction(target_sr, orig_sr)
        return resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def _to_mono(x: np.ndarray) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` -> ``(n,)`` float32 by averaging channels."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an audio file (or the audio track of a video) to float32 mono at 16 kHz.

    WAV/FLAC/OGG/AIFF go through soundfile; anything else (MP3, M4A, MP4, ...) through PyAV.
    Channels are averaged; a rate above 16 kHz is resampled. Raises :class:`SampleRateTooLow`
    for audio recorded below 16 kHz, :class:`MediaError` on a corrupt file, a file without an
    audio stream, or an empty one.
    """
    p = _check_file(path)
    if p.suffix.lower() in _AUDIO_SUFFIXES_SOUNDFILE:
        import soundfile as sf

        try:
            data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
            raise MediaError(f"audio cannot be decoded ({type(e).__name__})", source=p.name) from e
        samples = _to_mono(data)
        if samples.size == 0:
            raise MediaError("audio file holds no samples", source=p.name)
        return resample(samples, _check_rate(int(sr), p.name))
    decoded = _decode_audio_av(p)
    if decoded is None:
        raise MediaError("no audio stream in the file", source=p.name)
    if decoded.size == 0:
        raise MediaError("audio stream holds no samples", source=p.name)
    return decoded


def _decode_audio_av(p: Path, container: object | None = None) -> np.ndarray | None:
    """Decode the first audio stream with PyAV -> float32 mono 16 kHz, or None if there is none.

    A stream whose native rate is below 16 kHz raises :class:`SampleRateTooLow` before decoding."""
    import av

    own = container is None
    try:
        c = av.open(str(p)) if own else container
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"media cannot be opened ({type(e).__name__})", source=p.name) from e
    try:
        if not c.streams.audio:  # type: ignore[attr-defined]
            return None
        stream = c.streams.audio[0]  # type: ignore[attr-defined]
        # FFmpeg downmixes to packed float mono at the stream's own rate; soxr then resamples
        # (one resampler for every path, so a WAV and the same audio in an MP4 embed alike).
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise MediaError("audio stream has no sample rate", source=p.name)
        _check_rate(rate, p.name, "audio track" if c.streams.video else "audio")  # type: ignore[attr-defined]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        try:
            if not own:
                c.seek(0)  # type: ignore[attr-defined]
            for frame in c.decode(stream):  # type: ignore[attr-defined]
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"audio stream cannot be decoded ({type(e).__name__})", source=p.name) from e
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return resample(np.concatenate(chunks), rate)
    finally:
        if own:
            c.close()  # type: ignore[attr-defined]


# -- video --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its index in the stream, its time in seconds and RGB pixels."""

    index: int
    time: float
    rgb: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class VideoClip:
    """Frames sampled from a video and its audio track (16 kHz mono float32, or None)."""

    source: str
    frames: list[VideoFrame] = field(repr=False)
    audio: np.ndarray | None = field(repr=False)
    duration: float
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def load_video(
    path: str | os.PathLike[str],
    *,
    every_n: int | None = None,
    max_frames: int | None = 16,
    with_audio: bool = True,
    progress: ProgressCallback | None = None,
) -> VideoClip:
    """Decode a video into sampled RGB frames plus its audio track.

    Frame choice: with ``every_n`` every n-th frame is kept (0, n, 2n, ...), capped at
    ``max_frames`` if given; with only ``max_frames`` (default 16) that many frames are spread
    evenly over the clip; with neither, every frame. Only the kept frames are converted to RGB
    (the costly part), the others are just decoded.

    ``progress(done, total)`` is called after each decoded frame batch.
    Raises :class:`MediaError` for a file that cannot be opened, has no video stream, or
    whose stream fails to decode before any frame came out; :class:`SampleRateTooLow` (with
    ``with_audio``) for a sound track recorded below 16 kHz.
    """
    import av

    p = _check_file(path)
    if every_n is not None and every_n < 1:
        raise ValueError("every_n must be >= 1")
    if max_frames is not None and max_frames < 1:
        raise ValueError("max_frames must be >= 1")
    try:
        c = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"video cannot be opened ({type(e).__name__})", source=p.name) from e
    try:
        if not c.streams.video:
            raise MediaError("no video stream in the file", source=p.name)
        if with_audio and c.streams.audio:  # refuse a sound track below 16 kHz before decoding frames
            a = c.streams.audio[0]
            _check_rate(int(a.rate or a.codec_context.sample_rate or SAMPLE_RATE), p.name, "audio track")
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        fps = float(vs.average_rate) if vs.average_rate else 0.0
        tb = vs.time_base
        duration = 0.0
        if vs.duration is not None and tb is not None:
            duration = float(vs.duration * tb)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        total = int(vs.frames or 0)
        if total <= 0 and duration > 0 and fps > 0:
            total = round(duration * fps)

        wanted: set[int] | None
        if every_n is not None:
            wanted = None
        elif max_frames is not None and total > 0:
            wanted = set(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int).tolist())
        else:
            wanted = None  # unknown length: keep all (capped by max_frames below)

        frames: list[VideoFrame] = []
        n = 0
        try:
            for frame in c.decode(vs):
                keep = (n % every_n == 0) if every_n is not None else (wanted is None or n in wanted)
                if keep and (max_frames is None or len(frames) < max_frames):
                    t = (
                        float(frame.pts * tb)
                        if frame.pts is not None and tb is not None
                        else n / (fps or 25.0)
                    )
                    rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                    frames.append(VideoFrame(index=n, time=t, rgb=rgb))
                n += 1
                if progress is not None and n % 10 == 0:
                    progress(n, max(total, n))
        except (av.FFmpegError, ValueError) as e:
            if not frames:
                raise MediaError(f"video stream cannot be decoded ({type(e).__name__})", source=p.name) from e
            log.warning("%s: video decoding stopped early after %d frames (%s)", p.name, n, type(e).__name__)
        if not frames:
            raise MediaError("video stream holds no frames", source=p.name)
        if n < 2:
            raise MediaError("not a video: the file holds a single picture", source=p.name)
        if progress is not None:
            progress(n, n)
        if duration <= 0:
            duration = n / fps if fps > 0 else frames[-1].time
        audio = _decode_audio_av(p, c) if with_audio else None
        h, w = frames[0].rgb.shape[:2]
        return VideoClip(
            source=p.name,
            frames=frames,
            audio=audio,
            duration=duration,
            fps=fps,
            frame_count=n,
            width=w,
            height=h,
        )
    except MediaError:
        raise
    except av.FFmpegError as e:
        raise MediaError(f"video cannot be decoded ({type(e).__name__})", source=p.name) from e
    finally:
        c.close()
