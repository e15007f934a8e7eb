"""Generator adapters: how a released :class:`ConditioningBundle` reaches a model.

Every adapter follows one small protocol (:class:`GeneratorAdapter`): ``validate_request``
refuses a request whose parameters the adapter would not accept (called before anything is
consumed: see :func:`validate_request`), ``check`` refuses a bundle
whose templates the model cannot use (a dlib 128-d face for an ArcFace model, say) with
:class:`~conditioning._errors.AdapterMismatch`, and ``generate`` consumes the bundle and writes
media files. Adapters never log, print or put an embedding in an error message, and they zero
the temporary arrays they derive from the templates.

Adapters:

``demo``
    The offline demonstration generator: a procedural PNG seeded by each face embedding (and a
    WAV tone sequence from each voice embedding), with the prompt drawn on it. Needs no weights.
``diffusers-faceid``
    Stable Diffusion with an IP-Adapter FaceID (h94 layout); insightface ArcFace 512-d faces.
    Needs the ``diffusers`` extra.
``inswapper``
    An insightface inswapper-style ONNX face model via onnxruntime; ArcFace 512-d faces.
``sealed``
    No model here: the bundle is serialised (safetensors) and sealed to the X25519 public key of
    a generator in another process or machine, for one use before an expiry; the generator opens
    it with :func:`open_sealed`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import struct
import textwrap
from collections.abc import Callable, Mapping, MutableSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from conditioning._bundle import ConditioningBundle, _issue_bundle
from consent import pae
from conditioning._errors import (
    AdapterMismatch,
    AdapterUnavailable,
    SealedExportError,
    SealedExportExpired,
    SealedExportReplayed,
    UnknownAdapter,
)

__all__ = [
    "ADAPTERS",
    "ANY_FAMILY",
    "ARCFACE_FAMILY",
    "NO_FACE",
    "DemoAdapter",
    "DiffusersFaceIDAdapter",
    "GeneratorAdapter",
    "InswapperAdapter",
    "SealedExport",
    "SealedExportAdapter",
    "faceid_embeds",
    "get_adapter",
    "open_sealed",
    "seal_bundle",
    "validate_request",
]

ANY_FAMILY = "*"
"""In ``face_families``: any face encoder family is accepted."""
NO_FACE = ""
"""In ``face_families``: a bundle without any face is accepted."""
ARCFACE_FAMILY = "insightface-arcface"
ARCFACE_DIM = 512


@runtime_checkable
class GeneratorAdapter(Protocol):
    """What the gate needs from a generator."""

    name: str
    face_families: tuple[str, ...]

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Raise AdapterMismatch for any request value the adapter would refuse (every parameter
        it reads: seed, steps, target, ...). Called before the gate consumes a use, so that a
        parameter can never be refused after the commit."""
        ...

    def check(self, bundle: ConditioningBundle) -> None:
        """Raise AdapterMismatch when the bundle's templates do not fit the model."""
        ...

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """Consume the bundle and write media files under ``out_dir``; return their paths."""
        ...


# -- shared helpers ------------------------------------------------------------------------------
def _check_faces(
    adapter: str,
    accepted: tuple[str, ...],
    bundle: ConditioningBundle,
    *,
    face_dim: int | None = None,
    expects: str = "",
) -> None:
    """The common face check: families, dimension, and whether a face is required."""
    faces = [c for c in bundle.cameos if c.face_encoder is not None]
    if not faces and NO_FACE not in accepted:
        raise AdapterMismatch(
            f"{adapter} needs a face template{expects}, but the bundle holds none "
            f"(cameos: {', '.join(c.cameo_id for c in bundle.cameos) or 'none'})"
        )
    if ANY_FAMILY in accepted:
        return
    for cameo in faces:
        family = cameo.face_family
        dim = cameo.face_shape[0] if cameo.face_shape else 0
        if family not in accepted:
            raise AdapterMismatch(
                f"{adapter} expects face templates{expects}; cameo {cameo.cameo_id!r} was enrolled "
                f"with {family!r} ({dim}-d). Templates of different encoders are never converted: "
                f"enroll the cameo with an accepted encoder or use an adapter that takes {family!r}"
            )
        if face_dim is not None and dim != face_dim:
            raise AdapterMismatch(
                f"{adapter} expects {face_dim}-d face templates{expects}; cameo {cameo.cameo_id!r} "
                f"has a {dim}-d template from {family!r}"
            )


def _json_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-representable part of a request (tensors and other objects are left out)."""
    out: dict[str, Any] = {}
    for key, value in request.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _request_tag(bundle: ConditioningBundle, request: Mapping[str, Any], adapter: str) -> str:
    """A stable, non-secret file tag for one call: same bundle ids + same request = same tag."""
    material = json.dumps(
        {
            "adapter": adapter,
            "generator": bundle.generator_id,
            "request_digest": bundle.request_digest,
            "request": _json_request(request),
            "cameos": [c.cameo_id for c in bundle.cameos],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _param(request: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A request value: top level first, then the request's ``params`` mapping (as the CLI sends)."""
    if key in request:
        return request[key]
    params = request.get("params")
    if isinstance(params, Mapping) and key in params:
        return params[key]
    return default


def validate_request(adapter: Any, request: Mapping[str, Any]) -> None:
    """Have ``adapter`` validate every request value it reads, before the gate consumes a use.

    An adapter without ``validate_request`` is refused (:class:`AdapterUnavailable`): it could
    refuse a parameter only after the commit, when the use is already spent."""
    check = getattr(adapter, "validate_request", None)
    if not callable(check):
        raise AdapterUnavailable(
            f"adapter {getattr(adapter, 'name', type(adapter).__name__)!r} has no validate_request: "
            "its parameters could only be refused after a use is consumed"
        )
    check(request)


_MAX_SEED = (1 << 63) - 1


def _request_seed(request: Mapping[str, Any]) -> int:
    seed = _param(request, "seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
            raise AdapterMismatch("request 'seed' must be an integer from 0 to 2**63 - 1")
        return seed
    return 0


def _integer(request: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = _param(request, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdapterMismatch(f"request {key!r} must be an integer from {low} to {high}")
    return value


def _optional_text(request: Mapping[str, Any], key: str) -> None:
    value = _param(request, key)
    if value is not None and not isinstance(value, str):
        raise AdapterMismatch(f"request {key!r} must be a string")


def _prompt(request: Mapping[str, Any]) -> str:
    prompt = request.get("prompt", "")
    if not isinstance(prompt, str):
        raise AdapterMismatch("request 'prompt' must be a string")
    return prompt


def _number(request: Mapping[str, Any], key: str, default: float, kind: type = float) -> Any:
    value = _param(request, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterMismatch(f"request {key!r} must be a number")
    return kind(value)


def _safe_reason(error: BaseException) -> str:
    """A third-party error's message, unless it could quote numbers from a tensor."""
    message = str(error).splitlines()[0][:200] if str(error) else ""
    if not message or re.search(r"\d\.\d", message):
        return type(error).__name__
    return f"{type(error).__name__}: {message}"


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return np.asarray(vector / norm) if norm > 0 else vector


# -- (a) demo ------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _projection(dim: int, k: int, salt: int) -> np.ndarray:
    """A fixed random projection from a ``dim``-d embedding to ``k`` parameters (same everywhere)."""
    rng = np.random.default_rng([dim, k, salt, 0xCA3E0])
    projection: np.ndarray = rng.standard_normal((dim, k))
    return projection


@lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except (OSError, ImportError, TypeError):  # Pillow without FreeType
        return ImageFont.load_default()


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
def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as e:
        raise AdapterUnavailable(
            "the diffusers-faceid adapter needs the optional 'diffusers' extra "
            "(pip install 'cameo[diffusers]'): diffusers is not importable"
        ) from e
    return diffusers


def faceid_embeds(bundle: ConditioningBundle, *, negative: bool = True, dtype: Any = None,
                  device: Any = None) -> torch.Tensor:
    """The identity for a diffusers IP-Adapter FaceID pipeline, from a released bundle:
    ``ip_adapter_image_embeds=[faceid_embeds(bundle)]``. Shape ``(2, n, 1, 512)`` (a zero negative
    half for classifier-free guidance, then the n cameos' normalised ArcFace embeddings), or
    ``(1, n, 1, 512)`` with ``negative=False``. The tensor belongs to the bundle: it is zeroed when
    the bundle's ``with`` block ends. A bundle without ArcFace 512-d faces (a dlib one, say) is
    refused with AdapterMismatch: templates of different encoders are never converted."""
    _check_faces("faceid_embeds", (ARCFACE_FAMILY,), bundle, face_dim=ARCFACE_DIM,
                 expects=" from insightface ArcFace (buffalo_l, 512-d)")
    faces = bundle.face_embeddings(bundle.face_families()[0])
    ident = bundle._track(torch.nn.functional.normalize(faces, dim=-1))
    if dtype is not None or device is not None:
        ident = bundle._track(ident.to(device=device, dtype=dtype))
    positive = bundle._track(ident.reshape(1, ident.shape[0], 1, ident.shape[1]))
    if not negative:
        return positive
    return bundle._track(torch.cat([torch.zeros_like(positive), positive]))


class DiffusersFaceIDAdapter:
    """Stable Diffusion 1.5 + IP-Adapter FaceID through diffusers.

    FaceID was trained on insightface buffalo_l ArcFace embeddings (512-d, unit norm); any other
    face template is refused. The identity goes in through ``ip_adapter_image_embeds`` as a list
    with one ``(2, n, 1, 512)`` tensor: zeros for the unconditional half, then the ``n`` normed
    face embeddings (``(1, n, 1, 512)`` when classifier-free guidance is off).

    Give either a ready ``pipeline`` (a ``StableDiffusionPipeline`` with the FaceID adapter
    loaded, or pass ``ip_adapter`` to load it) or a local ``model_dir`` (loaded offline).
    ``ip_adapter`` is a local folder/repo path (with ``weight_name``) or an in-memory state dict
    in the h94 layout (``{"image_proj": ..., "ip_adapter": ...}``).

    Request keys: ``prompt`` (needs the pipeline's tokenizer) or ``prompt_embeds`` (a tensor),
    ``negative_prompt``/``negative_prompt_embeds``, ``seed``, ``steps``, ``guidance_scale``,
    ``height``, ``width``, ``identity_scale`` (the IP-Adapter scale).
    """

    name = "diffusers-faceid"

    def __init__(
        self,
        pipeline: Any = None,
        *,
        model_dir: str | Path | None = None,
        ip_adapter: str | Path | Mapping[str, Any] | None = None,
        weight_name: str = "ip-adapter-faceid_sd15.bin",
        subfolder: str | None = None,
        scale: float = 1.0,
        steps: int = 30,
        guidance_scale: float = 7.5,
        face_families: tuple[str, ...] = (ARCFACE_FAMILY,),
    ) -> None:
        diffusers = _import_diffusers()
        if pipeline is None:
            if model_dir is None:
                raise AdapterUnavailable("diffusers-faceid needs a pipeline or a local model_dir")
            try:
                pipeline = diffusers.StableDiffusionPipeline.from_pretrained(
                    str(model_dir), local_files_only=True, safety_checker=None, requires_safety_checker=False
                )
            except (OSError, ValueError) as e:
                raise AdapterUnavailable(f"cannot load the diffusion model from {model_dir}: {e}") from e
        if ip_adapter is not None:
            try:
                if isinstance(ip_adapter, Mapping):
                    pipeline.load_ip_adapter(
                        dict(ip_adapter), subfolder=None, weight_name=None, image_encoder_folder=None
                    )
                else:
                    pipeline.load_ip_adapter(
                        str(ip_adapter),
                        subfolder=subfolder,
                        weight_name=weight_name,
                        image_encoder_folder=None,
                        local_files_only=True,
                    )
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise AdapterUnavailable(f"cannot load the FaceID IP-Adapter: {type(e).__name__}") from e
        unet = getattr(pipeline, "unet", None)
        if unet is None or getattr(unet, "encoder_hid_proj", None) is None:
            raise AdapterUnavailable("the pipeline has no IP-Adapter loaded (pass ip_adapter=...)")
        self.pipeline = pipeline
        self.scale = float(scale)
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.face_families = tuple(face_families)
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Reads ``prompt`` (or ``prompt_embeds``), ``negative_prompt``, ``seed``, ``steps``
        (1-1000), ``guidance_scale``, ``identity_scale``, ``height`` and ``width`` (multiples of 8,
        up to 4096)."""
        _request_seed(request)
        _integer(request, "steps", self.steps, 1, 1000)
        _number(request, "guidance_scale", self.guidance_scale)
        _number(request, "identity_scale", self.scale)
        for key in ("height", "width"):
            if _param(request, key) is not None and _integer(request, key, 0, 8, 4096) % 8:
                raise AdapterMismatch(f"request {key!r} must be divisible by 8")
        if request.get("prompt_embeds") is None:
            if getattr(self.pipeline, "tokenizer", None) is None:
                raise AdapterMismatch("this pipeline has no tokenizer: give the request 'prompt_embeds'")
            _prompt(request)
        _optional_text(request, "negative_prompt")

    def check(self, bundle: ConditioningBundle) -> None:
        _check_faces(
            self.name,
            self.face_families,
            bundle,
            face_dim=ARCFACE_DIM,
            expects=" from insightface ArcFace (buffalo_l, 512-d)",
        )

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        self.check(bundle)
        self.validate_request(request)
        pipe = self.pipeline
        guidance = _number(request, "guidance_scale", self.guidance_scale)
        scale = _number(request, "identity_scale", self.scale)
        # diffusers runs classifier-free guidance (a negative half) only in this case
        cfg = guidance > 1.0 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
        faces = bundle.face_embeddings(bundle.face_families()[0])  # one family, checked above
        ident = bundle._track(torch.nn.functional.normalize(faces, dim=-1))
        ident = ident.to(device=pipe.device, dtype=pipe.unet.dtype)
        positive = bundle._track(ident.reshape(1, ident.shape[0], 1, ident.shape[1]))
        if cfg:
            embeds = bundle._track(torch.cat([torch.zeros_like(positive), positive]))
        else:
            embeds = positive

        kwargs: dict[str, Any] = {
            "num_inference_steps": _integer(request, "steps", self.steps, 1, 1000),
            "guidance_scale": guidance,
            "generator": torch.Generator(device="cpu").manual_seed(_request_seed(request)),
            "ip_adapter_image_embeds": [embeds],
            "output_type": "pil",
        }
        for key in ("height", "width"):
            if _param(request, key) is not None:
                kwargs[key] = _integer(request, key, 0, 8, 4096)
        if request.get("prompt_embeds") is not None:
            kwargs["prompt_embeds"] = request["prompt_embeds"]
            if request.get("negative_prompt_embeds") is not None:
                kwargs["negative_prompt_embeds"] = request["negative_prompt_embeds"]
        else:
            kwargs["prompt"] = _prompt(request)
            if isinstance(_param(request, "negative_prompt"), str):
                kwargs["negative_prompt"] = _param(request, "negative_prompt")

        pipe.set_ip_adapter_scale(scale)
        try:
            with torch.inference_mode():
                result = pipe(**kwargs)
        except (ValueError, RuntimeError, TypeError) as e:
            # a shape or dtype complaint from diffusers; its cause is left out of the chain since
            # a message could quote tensor values (_safe_reason drops any that look like it)
            raise AdapterMismatch(f"{self.name}: the pipeline refused the call ({_safe_reason(e)})") from None
        finally:
            embeds.zero_()
            kwargs.clear()

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = _request_tag(bundle, request, self.name)
        paths = []
        for i, image in enumerate(result.images):
            path = out_dir / f"faceid-{tag}-{i}.png"
            image.save(path, format="PNG")
            paths.append(path)
        return paths


# -- (c) inswapper -------------------------------------------------------------------------------
class InswapperAdapter:
    """An insightface inswapper-style face swap model (ONNX, onnxruntime).

    The model takes ``target`` ``[1, 3, 128, 128]`` (RGB / 255) and ``source`` latent ``[1, 512]``,
    where ``latent = normed_arcface_embedding @ emap`` renormalised and ``emap`` is the graph's
    last initializer (512 x 512); it returns ``[1, 3, 128, 128]`` in ``[0, 1]``.

    Request keys: ``target`` (an aligned face crop: an image path or an RGB uint8 array; resized
    to 128 x 128) and, when several cameos carry faces, ``source_cameo`` (the cameo id to use).
    Detection, alignment and pasting back into a full frame are the caller's.
    """

    name = "inswapper"
    input_size = 128

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        face_families: tuple[str, ...] = (ARCFACE_FAMILY,),
    ) -> None:
        self.face_families = tuple(face_families)
        try:
            import onnx
            import onnxruntime as ort
            from onnx import numpy_helper
        except ImportError as e:
            raise AdapterUnavailable("the inswapper adapter needs onnx and onnxruntime") from e
        path = Path(model_path)
        try:
            model = onnx.load(str(path))
            if not model.graph.initializer:
                raise ValueError("the graph has no initializers")
            emap = numpy_helper.to_array(model.graph.initializer[-1]).astype(np.float32)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # the emap initializer is unused by the graph; that is expected
            session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
        except Exception as e:
            raise AdapterUnavailable(
                f"cannot load the inswapper model {path.name}: {type(e).__name__}"
            ) from e
        if emap.shape != (ARCFACE_DIM, ARCFACE_DIM):
            raise AdapterUnavailable(
                f"{path.name} is not an inswapper model: its last initializer (emap) has shape "
                f"{emap.shape}, expected {(ARCFACE_DIM, ARCFACE_DIM)}"
            )
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 2 or len(outputs) < 1:
            raise AdapterUnavailable(f"{path.name} is not an inswapper model: expected 2 inputs, 1 output")
        if len(inputs[0].shape) != 4 or inputs[0].shape[2:] != [self.input_size, self.input_size]:
            raise AdapterUnavailable(
                f"{path.name}: target input must be [1, 3, 128, 128], got {inputs[0].shape}"
            )
        if len(inputs[1].shape) != 2 or inputs[1].shape[1] != ARCFACE_DIM:
            raise AdapterUnavailable(f"{path.name}: source input must be [1, 512], got {inputs[1].shape}")
        self._emap = emap
        self._session = session
        self._inputs = (inputs[0].name, inputs[1].name)
        self._output = outputs[0].name

    def check(self, bundle: ConditioningBundle) -> None:
        _check_faces(
            self.name,
            self.face_families,
            bundle,
            face_dim=ARCFACE_DIM,
            expects=" from insightface ArcFace (512-d)",
        )

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Reads ``target`` (decoded here, so an unreadable one is refused before anything is
        consumed) and ``source_cameo`` (a cameo id, when given)."""
        self._target(request)
        wanted = _param(request, "source_cameo")
        if wanted is not None and (not isinstance(wanted, str) or not wanted):
            raise AdapterMismatch("request 'source_cameo' must be a cameo id")

    def _target(self, request: Mapping[str, Any]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        target = _param(request, "target")
        if target is None:
            raise AdapterMismatch("inswapper needs a request 'target': an aligned face crop")
        try:
            if isinstance(target, np.ndarray):
                if target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
                    raise AdapterMismatch("request 'target' must be an RGB uint8 array (H, W, 3)")
                image = Image.fromarray(target, "RGB")
            elif isinstance(target, (str, Path)):
                with Image.open(Path(target)) as opened:
                    image = opened.convert("RGB")
            else:
                raise AdapterMismatch("request 'target' must be an image path or an RGB uint8 array")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise AdapterMismatch(f"inswapper cannot read the target image: {type(e).__name__}") from e
        if image.size != (self.input_size, self.input_size):
            image = image.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC)
        rgb = np.asarray(image, dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from PIL import Image

        self.check(bundle)
        with_face = [c for c in bundle.cameos if c.face_encoder is not None]
        wanted = _param(request, "source_cameo")
        if wanted is not None:
            chosen = [c for c in with_face if c.cameo_id == wanted]
            if not chosen:
                raise AdapterMismatch(f"inswapper: source_cameo {wanted!r} has no face in this bundle")
        elif len(with_face) == 1:
            chosen = with_face
        else:
            raise AdapterMismatch(
                "inswapper swaps one identity per call: name it with request 'source_cameo'"
            )
        blob = self._target(request)
        face = chosen[0].face
        assert face is not None
        emb = face.detach().cpu().numpy().astype(np.float32)
        latent = (_unit(emb) @ self._emap).reshape(1, -1).astype(np.float32)
        latent /= np.linalg.norm(latent)
        try:
            pred = self._session.run([self._output], {self._inputs[0]: blob, self._inputs[1]: latent})[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no stable exported type
            raise AdapterMismatch(f"inswapper: the model refused its inputs ({type(e).__name__})") from None
        finally:
            emb.fill(0.0)
            latent.fill(0.0)
        if pred.shape != (1, 3, self.input_size, self.input_size):
            raise AdapterUnavailable(f"inswapper: unexpected output shape {pred.shape}")
        rgb = (np.clip(pred[0].transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"inswapper-{_request_tag(bundle, request, self.name)}.png"
        Image.fromarray(rgb, "RGB").save(path, format="PNG")
        return [path]


# -- (d) sealed export ---------------------------------------------------------------------------
SEALED_FORMAT = "cameo-sealed-bundle/v1"
_MAGIC = b"cameo-sealed-bundle/v1\n"
_UNSIGNED, _SIGNED = b"\x00", b"\x01"
_MAX_SKEW = timedelta(minutes=5)


def _pae(body: bytes) -> bytes:
    """DSSE pre-authentication encoding under the sealed format's tag (consent's one PAE): a
    signature over this never verifies as another type."""
    return pae(SEALED_FORMAT, body)


def _epoch(now: datetime) -> int:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")
    return int(now.timestamp())


def _public_key(key: Any) -> Any:
    from nacl.public import PublicKey

    if isinstance(key, PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return PublicKey(bytes(key))
    raise TypeError("recipient public key must be a nacl PublicKey or 32 raw bytes (X25519)")


def _private_key(key: Any) -> Any:
    from nacl.public import PrivateKey

    if isinstance(key, PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return PrivateKey(bytes(key))
    raise TypeError("private key must be a nacl PrivateKey or 32 raw bytes (X25519)")


@dataclass(frozen=True)
class SealedExport:
    """A sealed bundle: ``blob`` opens only with the recipient's private key, once, before ``not_after``."""

    blob: bytes
    export_id: str
    not_after: datetime

    def __repr__(self) -> str:
        return f"SealedExport(export_id={self.export_id!r}, not_after={self.not_after.isoformat()}, {len(self.blob)} bytes)"


def seal_bundle(
    bundle: ConditioningBundle,
    recipient_public_key: Any,
    *,
    now: datetime,
    ttl: timedelta = timedelta(minutes=5),
    signing_key: Any = None,
    export_id: str | None = None,
) -> SealedExport:
    """Serialise an open bundle (safetensors) and seal it to a generator's X25519 public key.

    The sealed payload carries a fresh export id and an expiry; :func:`open_sealed` refuses a
    second opening of the same export id. With ``signing_key`` (a nacl ``SigningKey``, the
    registry's) the payload is also signed, so the recipient can tell it came from the registry.
    """
    from nacl.public import SealedBox
    from safetensors.torch import save

    issued = _epoch(now)
    export_id = export_id or f"exp_{secrets.token_hex(16)}"
    not_after = issued + max(1, int(ttl.total_seconds()))
    tensors: dict[str, torch.Tensor] = {}
    cameos = []
    for i, cameo in enumerate(bundle.cameos):
        if cameo.face is not None:
            tensors[f"{i}.face"] = cameo.face.contiguous()
        if cameo.voice is not None:
            tensors[f"{i}.voice"] = cameo.voice.contiguous()
        cameos.append({**cameo.ids(), "restrictions": list(cameo.restrictions)})
    header = {
        "format": SEALED_FORMAT,
        "export_id": export_id,
        "issued_at": issued,
        "not_after": not_after,
        "generator_id": bundle.generator_id,
        "request_digest": bundle.request_digest,
        "cameos": cameos,
    }
    body = save(tensors, metadata={"cameo": json.dumps(header, sort_keys=True, separators=(",", ":"))})
    tensors.clear()
    if signing_key is not None:
        signature = signing_key.sign(_pae(body)).signature
        plaintext = _MAGIC + _SIGNED + signature + body
    else:
        plaintext = _MAGIC + _UNSIGNED + body
    blob = SealedBox(_public_key(recipient_public_key)).encrypt(plaintext)
    return SealedExport(
        blob=bytes(blob), export_id=export_id, not_after=datetime.fromtimestamp(not_after, UTC)
    )


def _safetensors_metadata(body: bytes) -> dict[str, str]:
    if len(body) < 8:
        raise ValueError("truncated")
    (length,) = struct.unpack("<Q", body[:8])
    if length > len(body) - 8:
        raise ValueError("truncated header")
    meta = json.loads(body[8 : 8 + length]).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise TypeError("bad metadata")
    return meta


def _mark_seen(seen: MutableSet[str] | Callable[[str], bool], export_id: str) -> bool:
    """Record ``export_id``; True when it had been seen before."""
    if isinstance(seen, MutableSet):
        if export_id in seen:
            return True
        seen.add(export_id)
        return False
    if callable(seen):
        return bool(seen(export_id))
    raise TypeError("seen must be a set or a callable(export_id) -> bool (True if already seen)")


def open_sealed(
    blob: bytes,
    private_key: Any,
    *,
    seen: MutableSet[str] | Callable[[str], bool],
    now: datetime,
    verify_key: Any = None,
    generator_id: str | None = None,
) -> ConditioningBundle:
    """Open a sealed export on the generator's side; returns a :class:`ConditioningBundle`.

    Steps: (1) decrypt with the generator's X25519 private key (authenticated: a wrong key or a
    changed byte fails); (2) with ``verify_key``, check the registry's Ed25519 signature, so that
    only the registry can make exports this generator accepts; (3) parse; (4) check the payload
    is for ``generator_id`` when given; (5) refuse it after its expiry (or issued in the future
    beyond a small skew); (6) refuse a replay: ``seen`` is a set of export ids, or a callable
    ``seen(export_id) -> bool`` that records the id and answers whether it was already there
    (make that atomic when several processes share it).
    """
    from nacl.exceptions import BadSignatureError, CryptoError
    from nacl.public import SealedBox
    from safetensors.torch import load

    # 1. decrypt
    try:
        plaintext = SealedBox(_private_key(private_key)).decrypt(bytes(blob))
    except CryptoError as e:
        raise SealedExportError("the sealed export does not open with this key, or it was altered") from e
    if not plaintext.startswith(_MAGIC):
        raise SealedExportError(f"not a {SEALED_FORMAT} payload")
    rest = plaintext[len(_MAGIC) :]
    flag, rest = rest[:1], rest[1:]
    # 2. signature
    if flag == _SIGNED:
        signature, body = rest[:64], rest[64:]
        if verify_key is not None:
            try:
                verify_key.verify(_pae(body), signature)
            except BadSignatureError as e:
                raise SealedExportError("the sealed export is not signed by the registry's key") from e
    elif flag == _UNSIGNED:
        body = rest
        if verify_key is not None:
            raise SealedExportError("the sealed export is unsigned but a registry signature is required")
    else:
        raise SealedExportError(f"malformed {SEALED_FORMAT} payload")
    # 3. parse
    try:
        header = json.loads(_safetensors_metadata(body)["cameo"])
        if not isinstance(header, dict) or header.get("format") != SEALED_FORMAT:
            raise ValueError("format")
        tensors = load(body)
    except Exception as e:  # json, struct and safetensors errors alike: the payload is malformed
        raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
    bundle: ConditioningBundle | None = None
    items: list[dict[str, Any]] = []
    try:
        try:
            export_id = str(header["export_id"])
            issued, not_after = int(header["issued_at"]), int(header["not_after"])
            for i, cameo in enumerate(header["cameos"]):
                item: dict[str, Any] = {"face": _pop_array(tensors, f"{i}.face"), "voice": None}
                items.append(item)  # before anything else can fail, so that it is wiped
                item["voice"] = _pop_array(tensors, f"{i}.voice")
                item.update(
                    cameo_id=cameo["cameo_id"],
                    face_encoder=cameo.get("face_encoder"),
                    voice_encoder=cameo.get("voice_encoder"),
                    restrictions=tuple(cameo.get("restrictions", ())),
                    consent_id=cameo["consent_id"],
                    consent_digest=cameo["consent_digest"],
                    grant_id=cameo["grant_id"],
                    token_id=cameo["token_id"],
                )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
        # 4. audience
        if generator_id is not None and header.get("generator_id") != generator_id:
            raise SealedExportError(
                f"the sealed export is for generator {header.get('generator_id')!r}, not {generator_id!r}"
            )
        # 5. time
        current = _epoch(now)
        if current > not_after:
            raise SealedExportExpired(
                f"sealed export {export_id} expired at {datetime.fromtimestamp(not_after, UTC).isoformat()}"
            )
        if issued > current + _MAX_SKEW.total_seconds():
            raise SealedExportError(f"sealed export {export_id} is issued in the future; check the clocks")
        # 6. once
        if _mark_seen(seen, export_id):
            raise SealedExportReplayed(f"sealed export {export_id} was already opened once")
        try:
            bundle = _issue_bundle(
                generator_id=header["generator_id"],
                request_digest=header["request_digest"],
                items=items,
                export_id=export_id,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
        return bundle
    finally:
        if bundle is None:  # refused: wipe what was decrypted
            for item in items:
                for key in ("face", "voice"):
                    if item.get(key) is not None:
                        item[key].fill(0.0)
        for leftover in tensors.values():
            leftover.zero_()


def _pop_array(tensors: dict[str, torch.Tensor], key: str) -> np.ndarray | None:
    tensor = tensors.pop(key, None)
    if tensor is None:
        return None
    if tensor.dtype != torch.float32 or tensor.ndim != 1:
        tensor.zero_()
        raise ValueError(f"{key} must be a 1-D float32 tensor")
    return tensor.numpy()


class SealedExportAdapter:
    """Seal the bundle for a generator in another process or machine (see :func:`seal_bundle`).

    ``generate`` writes one ``<export_id>.cameo-sealed`` file. ``generator_id``, when given,
    must match the bundle's: a bundle released for one generator is never sealed to another.
    ``clock`` returns the current aware datetime (injected for tests).
    """

    name = "sealed"
    face_families: tuple[str, ...] = (ANY_FAMILY, NO_FACE)

    def __init__(
        self,
        recipient_public_key: Any,
        *,
        generator_id: str | None = None,
        ttl: timedelta | float = timedelta(minutes=5),
        signing_key: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if recipient_public_key is None:
            raise AdapterUnavailable("the sealed adapter needs the generator's registered X25519 public key")
        try:
            self.recipient_public_key = _public_key(recipient_public_key)
        except TypeError as e:
            raise AdapterUnavailable(f"the sealed adapter's recipient key is unusable: {e}") from e
        self.generator_id = generator_id
        self.ttl = ttl if isinstance(ttl, timedelta) else timedelta(seconds=float(ttl))
        self.signing_key = signing_key
        self.clock = clock

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Reads no request value (the bundle is sealed as released)."""

    def check(self, bundle: ConditioningBundle) -> None:
        _check_faces(self.name, self.face_families, bundle)
        if self.generator_id is not None and bundle.generator_id != self.generator_id:
            raise AdapterMismatch(
                f"this bundle was released for generator {bundle.generator_id!r}; "
                f"it cannot be sealed to {self.generator_id!r}"
            )

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        self.check(bundle)
        export = seal_bundle(
            bundle, self.recipient_public_key, now=self.clock(), ttl=self.ttl, signing_key=self.signing_key
        )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{export.export_id}.cameo-sealed"
        path.write_bytes(export.blob)
        return [path]


# -- registry ------------------------------------------------------------------------------------
ADAPTERS: dict[str, Callable[..., GeneratorAdapter]] = {
    DemoAdapter.name: DemoAdapter,
    DiffusersFaceIDAdapter.name: DiffusersFaceIDAdapter,
    InswapperAdapter.name: InswapperAdapter,
    SealedExportAdapter.name: SealedExportAdapter,
}


def get_adapter(name: str, **config: Any) -> GeneratorAdapter:
    """Make the adapter registered as ``name`` with its configuration."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise UnknownAdapter(
            f"no generator adapter named {name!r}; known: {', '.join(sorted(ADAPTERS))}"
        ) from None
    return factory(**config)
