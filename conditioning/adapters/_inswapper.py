"""``inswapper``: an insightface inswapper-style ONNX face model via onnxruntime; ArcFace 512-d
faces."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._bundle import ConditioningBundle
from .._errors import (
    AdapterMismatch,
    AdapterUnavailable,
)

from ._base import ARCFACE_DIM, ARCFACE_FAMILY, _check_faces, _param, _request_tag, _unit


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
