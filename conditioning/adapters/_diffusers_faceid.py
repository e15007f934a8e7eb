"""``diffusers-faceid``: Stable Diffusion with an IP-Adapter FaceID (h94 layout); insightface
ArcFace 512-d faces. Needs the ``diffusers`` extra."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._bundle import ConditioningBundle
from .._errors import (
    AdapterMismatch,
    AdapterUnavailable,
)

from ._base import ARCFACE_DIM, ARCFACE_FAMILY, _check_faces, _integer, _number, _optional_text, _param, _prompt, _request_seed, _request_tag, _safe_reason


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
