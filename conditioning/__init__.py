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
    "ADAPTERS": "._adapters", "ARCFACE_FAMILY": "._adapters", "ANY_FAMILY": "._adapters", "GeneratorAdapter": "._adapters", "DemoAdapter": "._adapters",
    "DiffusersFaceIDAdapter": "._adapters", "InswapperAdapter": "._adapters", "SealedExportAdapter": "._adapters",
    "SealedExport": "._adapters", "get_adapter": "._adapters", "seal_bundle": "._adapters",
    "open_sealed": "._adapters", "faceid_embeds": "._adapters",
    "verify_output": "._provenance", "ProvenanceReport": "._provenance",
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
