"""Everything generator-facing: the gate, the conditioning bundle, generator adapters, likeness
screening and provenance.

    with gate.release(request, tokens, generator_id=..., now=...) as bundle:   # raises GateDenied
        output = my_pipeline(prompt, **adapter(bundle))                          # tensors wiped on exit
"""

from ._errors import (
    AdapterMismatch,
    ConditioningError,
    GateDenied,
    ProvenanceError,
    ScreeningDenied,
)
from ._gate import MAX_CAMEOS_PER_CALL, Gate, GateDecision, TokenVerdict

__all__ = [
    "MAX_CAMEOS_PER_CALL", "AdapterMismatch", "ConditioningError", "Gate", "GateDecision", "GateDenied",
    "ProvenanceError", "ScreeningDenied", "TokenVerdict",
]
