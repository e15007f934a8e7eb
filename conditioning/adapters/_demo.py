"""``demo``: the offline demonstration generator (a procedural PNG seeded by each face
embedding, a WAV tone sequence from each voice embedding). Needs no weights."""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._bundle import ConditioningBundle

from ._base import ANY_FAMILY, NO_FACE, _check_faces, _font, _json_request, _projection, _prompt, _request_seed, _request_tag, _unit


_PENTATONIC = (0, 2, 4, 7, 9, 12, 14, 16, 19, 21)


class DemoAdapter:
    """The offline demonstration generator (used by ``studio-v1``).

    It really consumes the released templates: each face embedding is projected (a fixed random
    projection, so the same template always gives the same parameters) to the colours,
    frequencies and phases of an interference pattern, one panel per face; each voice embedding
    becomes a short pentatonic tone sequence. The prompt is drawn on the image. Deterministic:
    the same identities and request give byte-identical files.
    """

    name = "demo"
    face_families: tuple[str, ...] = (ANY_FAMILY, NO_FACE)

    def __init__(self, *, size: int = 256, sample_rate: int = 16_000) -> None:
        if not 32 <= size <= 1024:
            raise ValueError("size must be between 32 and 1024 pixels")
        self.size = size
        self.sample_rate = sample_rate

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Reads ``prompt`` and ``seed``."""
        _prompt(request)
        _request_seed(request)

    def check(self, bundle: ConditioningBundle) -> None:
        _check_faces(self.name, self.face_families, bundle)

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        self.check(bundle)
        self.validate_request(request)
        prompt = _prompt(request)
        seed = _request_seed(request)
        request_key = hashlib.sha256(
            json.dumps(_json_request(request), sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        tag = _request_tag(bundle, request, self.name)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

        faces = [(c.cameo_id, c.face) for c in bundle.cameos if c.face is not None]
        voices = [(c.cameo_id, c.voice) for c in bundle.cameos if c.voice is not None]
        image = self._image(faces, prompt, seed, request_key)
        png = out_dir / f"demo-{tag}.png"
        image.save(png, format="PNG", compress_level=1)
        paths = [png]
        if voices:
            wav = out_dir / f"demo-{tag}.wav"
            self._write_wav(wav, [v for _, v in voices], seed, request_key)
            paths.append(wav)
        return paths

    # image ----------------------------------------------------------------------------------
    def _image(
        self, faces: list[tuple[str, torch.Tensor]], prompt: str, seed: int, request_key: bytes
    ) -> Any:
        from PIL import Image, ImageDraw

        n = self.size
        # request-dependent phase offsets: a new prompt or seed moves the pattern, not the palette
        rng = np.random.default_rng([seed, *request_key[:8]])
        shift = rng.uniform(0, 2 * np.pi, size=4)
        canvas = np.zeros((n, n, 3), dtype=np.float32)
        if not faces:
            ramp = np.linspace(0.25, 0.6, n)[:, None]
            canvas[:] = np.stack([ramp, ramp, ramp + 0.05], axis=-1)
        bounds = np.linspace(0, n, len(faces) + 1).astype(int)
        for (_, face), x0, x1 in zip(faces, bounds[:-1], bounds[1:], strict=True):
            emb = face.detach().cpu().numpy().astype(np.float64)
            params = _unit(emb) @ _projection(emb.shape[0], 24, 1)  # ~N(0, 1) each
            emb.fill(0.0)
            canvas[:, x0:x1] = self._panel(params, shift, x1 - x0)
            params.fill(0.0)
        image = Image.fromarray(np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
        canvas.fill(0.0)

        draw = ImageDraw.Draw(image, "RGBA")
        font = _font()
        lines = textwrap.wrap(prompt, width=max(8, n // 9))[:4] or [" "]
        line_h = 17
        top = n - 8 - line_h * len(lines)
        draw.rectangle((0, top - 6, n, n), fill=(0, 0, 0, 150))
        for i, line in enumerate(lines):
            draw.text((8, top + i * line_h), line, fill=(255, 255, 255, 255), font=font)
        draw.text((8, 6), "cameo demo - synthetic", fill=(255, 255, 255, 200), font=font)
        return image

    def _panel(self, p: np.ndarray, shift: np.ndarray, width: int) -> np.ndarray:
        n = self.size
        x = (np.arange(width, dtype=np.float32) / n)[None, :]
        y = (np.arange(n, dtype=np.float32) / n)[:, None]
        field = np.zeros((n, width), dtype=np.float32)
        for k in range(4):
            fx = 1.0 + 5.0 / (1.0 + np.exp(-p[k]))
            fy = 1.0 + 5.0 / (1.0 + np.exp(-p[4 + k]))
            phase = np.pi * np.tanh(p[8 + k]) + shift[k]
            weight = 0.5 + 0.5 / (1.0 + np.exp(-p[20 + k]))
            # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of n * width sines
            ax, by = 2 * np.pi * fx * x, 2 * np.pi * fy * y + phase
            field += weight * (np.cos(by) * np.sin(ax) + np.sin(by) * np.cos(ax))
        t = (0.5 + 0.5 * np.tanh(field))[..., None]
        ring = (0.5 + 0.5 * np.cos(6.0 * np.pi * np.hypot(x - 0.5 * width / n, y - 0.5) + p[12]))[..., None]
        colour_a = (1.0 / (1.0 + np.exp(-p[13:16]))).astype(np.float32)
        colour_b = (1.0 / (1.0 + np.exp(-p[16:19]))).astype(np.float32)
        colour_c = (1.0 / (1.0 + np.exp(-p[17:20] * 1.7))).astype(np.float32)
        panel: np.ndarray = (colour_a * t + colour_b * (1.0 - t)) * 0.8 + colour_c * ring * 0.2
        return panel

    # sound ----------------------------------------------------------------------------------
    def _write_wav(self, path: Path, voices: list[torch.Tensor], seed: int, request_key: bytes) -> None:
        import wave

        sr = self.sample_rate
        note = int(0.12 * sr)
        t = np.arange(note) / sr
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        order = np.random.default_rng([seed, *request_key[:8]]).permutation(6)
        chunks: list[np.ndarray] = []
        for voice in voices:
            emb = voice.detach().cpu().numpy().astype(np.float64)
            params = _unit(emb) @ _projection(emb.shape[0], 8, 2)
            emb.fill(0.0)
            base = 196.0 * 2 ** (np.tanh(params[7]) / 2)  # around G3, per identity
            steps = (np.floor((np.tanh(params[:6]) + 1) * 5).astype(int)).clip(0, len(_PENTATONIC) - 1)
            for i in order:
                freq = base * 2 ** (_PENTATONIC[steps[i]] / 12)
                chunks.append(0.3 * envelope * np.sin(2 * np.pi * freq * t))
            chunks.append(np.zeros(note // 2))
            params.fill(0.0)
        samples = (np.concatenate(chunks) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sr)
            out.writeframes(samples.tobytes())


# -- (b) diffusers IP-Adapter FaceID -------------------------------------------------------------
