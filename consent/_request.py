"""The request digest a token binds: canonical prompt and parameters plus each reference's SHA-256."""

from __future__ import annotations

from typing import Any

from ._canonical import canonical_json, digest, pae

REQUEST_TYPE = "application/vnd.cameo.generation-request.v1+json"


def request_digest(prompt: str, params: dict[str, Any], reference_hashes: list[str]) -> str:
    body = canonical_json({"params": params, "prompt": prompt, "references": list(reference_hashes)})
    return digest(pae(REQUEST_TYPE, body))
