"""What every adapter shares: the protocol, the encoder families, the face check and the request
parameter readers (each adapter validates the parameters it reads before any use is consumed)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._bundle import ConditioningBundle
from .._errors import (
    AdapterMismatch,
    AdapterUnavailable,
)


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


