"""Media loading: canonical arrays out, typed MediaError for anything unreadable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from cameo._errors import EnrollmentError, MediaError
from cameo.biometrics._media import SAMPLE_RATE, load_audio, load_image, load_video, resample


# -- images -------------------------------------------------------------------------------------
def test_image_is_rgb_uint8_contiguous(tmp_path: Path) -> None:
    p = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 30), 128, np.uint8), mode="L").save(p)
    img = load_image(p)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8 and img.flags.c_contiguous


def test_rgba_and_palette_become_rgb(tmp_path: Path) -> None:
    p = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((8, 9, 4), np.uint8), mode="RGBA").save(p)
    assert load_image(p).shape == (8, 9, 3)
    q = tmp_path / "pal.gif"
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).convert("P").save(q)
    assert load_image(q).shape == (8, 9, 3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((10, 40, 3), np.uint8)
    arr[:, :5] = 255  # a white band on the left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape == (40, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the band is now on top


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 40],  # empty, text, truncated JPEG
)
def test_bad_images_raise_media_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(MediaError, match="bad.jpg") as ei:
        load_image(p)
    assert isinstance(ei.value, EnrollmentError) and ei.value.exit_code == 2
    assert ei.value.source == "bad.jpg"


def test_truncated_real_jpeg(tmp_path: Path, data_dir: Path) -> None:
    raw = (data_dir / "faces" / "obama" / "1.jpg").read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MediaError, match="cut.jpg") as ei:
        load_image(p)
    assert ei.value.__cause__ is not None


def test_missing_file(tmp_path: Path) -> None:
    for fn in (load_image, load_audio, load_video):
        with pytest.raises(MediaError, match="nope"):
            fn(tmp_path / "nope")


# -- audio --------------------------------------------------------------------------------------
def _tone(sr: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])  # below 16 kHz: test_cli_hardening.py
def test_any_rate_from_16k_up_is_resampled_to_16k(tmp_path: Path, sr: int) -> None:
    p = tmp_path / f"tone_{sr}.wav"
    sf.write(p, _tone(sr), sr)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - SAMPLE_RATE) <= 2
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * SAMPLE_RATE / len(x) - 440.0) < 3.0  # the pitch is kept


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = _tone(16000)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, np.zeros_like(left)], axis=1), 16000)
    x = load_audio(p)
    assert x.ndim == 1 and np.allclose(x, left / 2, atol=1e-3)


def test_resample_identity_and_length() -> None:
    x = _tone(44100, 2.0)
    assert resample(x, 16000, 16000) is not None
    assert abs(len(resample(x, 44100)) - 32000) <= 2


def test_corrupt_audio(tmp_path: Path) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(MediaError, match="bad.wav") as ei:
        load_audio(p)
    assert ei.value.__cause__ is not None
    q = tmp_path / "bad.mp3"
    q.write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError, match="bad.mp3"):
        load_audio(q)


def test_audio_track_of_a_video(data_dir: Path) -> None:
    x = load_audio(data_dir / "videos" / "real_talking_head.mp4")
    assert x.dtype == np.float32 and abs(len(x) / SAMPLE_RATE - 8.0) < 0.1


def test_video_without_audio_has_no_audio(data_dir: Path) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(data_dir / "videos" / "noaudio.mp4")


# -- video --------------------------------------------------------------------------------------
def test_video_frames_spread_and_audio(data_dir: Path) -> None:
    calls: list[tuple[int, int]] = []
    clip = load_video(
        data_dir / "videos" / "real_talking_head.mp4",
        max_frames=8,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert len(clip.frames) == 8
    idx = [f.index for f in clip.frames]
    assert idx[0] == 0 and idx[-1] == clip.frame_count - 1 and idx == sorted(idx)
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (clip.height, clip.width, 3) for f in clip.frames)
    assert all(f.rgb.flags.c_contiguous for f in clip.frames)
    assert clip.frames[1].time > clip.frames[0].time
    assert clip.audio is not None and clip.audio.dtype == np.float32
    assert abs(len(clip.audio) / SAMPLE_RATE - clip.duration) < 0.1
    assert calls and calls[-1][0] == calls[-1][1] == clip.frame_count
    assert "array" not in repr(clip)


def test_video_every_n(data_dir: Path) -> None:
    clip = load_video(data_dir / "videos" / "still_photo.mp4", every_n=25, max_frames=None, with_audio=False)
    assert [f.index for f in clip.frames] == [0, 25, 50, 75]
    assert clip.audio is None


def test_odd_width_video_frames_are_contiguous(data_dir: Path) -> None:
    # 306 px wide: PyAV pads lines; dlib refuses non-contiguous arrays
    clip = load_video(data_dir / "videos" / "photo_pan.mp4", max_frames=2)
    assert clip.width == 306 and all(f.rgb.flags.c_contiguous for f in clip.frames)


def test_44k_stereo_audio_in_video_is_16k_mono(data_dir: Path) -> None:
    clip = load_video(data_dir / "videos" / "extra" / "real_vr_face2.mp4", max_frames=2)
    assert clip.audio is not None and abs(len(clip.audio) / SAMPLE_RATE - 5.0) < 0.1


def test_corrupt_video(tmp_path: Path, data_dir: Path) -> None:
    p = tmp_path / "bad.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(MediaError, match="bad.mp4"):
        load_video(p)
    img = tmp_path / "pic.mp4"
    img.write_bytes((data_dir / "faces" / "obama" / "1.jpg").read_bytes())
    with pytest.raises(MediaError, match="pic.mp4"):
        load_video(img, with_audio=False)
    wav = tmp_path / "sound.mp4"
    sf.write(wav, _tone(16000), 16000, format="WAV")
    with pytest.raises(MediaError, match="no video stream"):
        load_video(wav)
