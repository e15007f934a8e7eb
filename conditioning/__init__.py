"""Everything generator-facing: the gate, the conditioning bundle, generator adapters, likeness
screening and provenance.

    import conditioning
    registry = conditioning.open()                           # CAMEO_HOME, its database, its key files
    with registry.gate("my-sd") as gate:                     # a Gate that screens
        with gate.release(request, tokens, now=now) as bundle:   # raises GateDenied
            output = my_pipeline(prompt, ip_adapter_image_embeds=[conditioning.faceid_embeds(bundle)])
                                                             # tensors wiped on exit

``Gate(...)`` without a screener refuses to build; ``UnsafeNoScreening`` is the named way to skip.
"""

from typing import Any

from ._errors import (
    AdapterMismatch,
    AdapterUnavailable,
    BundleClosed,
    ConditioningError,
    GateDenied,
    GateMisconfigured,
    MixedEncoders,
    ProvenanceError,
    ProvenanceInvalid,
    ProvenanceMissing,
    ProvenanceUntrusted,
    SealedExportError,
    SealedExportExpired,
    SealedExportReplayed,
    ScreeningDenied,
    UnknownAdapter,
    UnsafeScreeningWarning,
)
from ._gate import MAX_CAMEOS_PER_CALL, Gate, GateDecision, TokenVerdict
from ._open import Registry, open
from ._screen import Finding, Screener, UnsafeNoScreening

# the bundle, the adapters and provenance pull in torch, onnxruntime and c2pa: loaded on first use
_LAZY = {
    "ConditioningBundle": "._bundle", "CameoConditioning": "._bundle",
    "ADAPTERS": ".adapters", "ARCFACE_FAMILY": ".adapters", "ANY_FAMILY": ".adapters", "GeneratorAdapter": ".adapters", "DemoAdapter": ".adapters",
    "DiffusersFaceIDAdapter": ".adapters", "InswapperAdapter": ".adapters", "SealedExportAdapter": ".adapters",
    "SealedExport": ".adapters", "get_adapter": ".adapters", "seal_bundle": ".adapters",
    "open_sealed": ".adapters", "faceid_embeds": ".adapters",
    "verify_output": ".provenance", "ProvenanceReport": ".provenance",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'conditioning' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_CAMEOS_PER_CALL", "AdapterMismatch", "AdapterUnavailable", "BundleClosed", "ConditioningError", "Finding",
    "Gate", "GateDecision", "GateDenied", "GateMisconfigured", "MixedEncoders", "ProvenanceError",
    "ProvenanceInvalid", "ProvenanceMissing", "ProvenanceUntrusted", "Registry", "Screener", "ScreeningDenied",
    "SealedExportError", "SealedExportExpired", "SealedExportReplayed", "TokenVerdict", "UnknownAdapter",
    "UnsafeNoScreening", "UnsafeScreeningWarning", "open",
    # loaded on first use (see _LAZY)
    "ADAPTERS", "ANY_FAMILY", "ARCFACE_FAMILY", "CameoConditioning", "ConditioningBundle", "DemoAdapter", "DiffusersFaceIDAdapter", "GeneratorAdapter", "InswapperAdapter", "ProvenanceReport", "SealedExport", "SealedExportAdapter", "faceid_embeds", "get_adapter", "open_sealed", "seal_bundle", "verify_output",
]
