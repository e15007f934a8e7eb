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

from ._base import ANY_FAMILY, ARCFACE_DIM, ARCFACE_FAMILY, NO_FACE, GeneratorAdapter, validate_request
from ._demo import DemoAdapter
from ._diffusers_faceid import DiffusersFaceIDAdapter, faceid_embeds
from ._inswapper import InswapperAdapter
from ._sealed import SEALED_FORMAT, SealedExport, SealedExportAdapter, open_sealed, seal_bundle
from collections.abc import Callable
from typing import Any

from .._errors import UnknownAdapter

__all__ = [
    "ADAPTERS",
    "ARCFACE_DIM",
    "SEALED_FORMAT",
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
