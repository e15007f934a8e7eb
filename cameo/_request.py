"""Generation requests: ``{"prompt": "...", "params": {...}, "references": ["path", ...]}``.

The digest covers the canonical prompt and parameters and the SHA-256 of each referenced file's
bytes, so a token bound to a request cannot be replayed with other media or another prompt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consent import ConsentError, canonical_json, request_digest, strict_json_loads

from ._errors import InvalidRequest

MAX_REQUEST_BYTES = 1 << 20
MAX_REFERENCES = 16


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in 1 MiB chunks. Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: dict[str, Any] = field(hash=False)
    references: tuple[Path, ...]
    reference_hashes: tuple[str, ...]
    digest: str

    @classmethod
    def build(cls, prompt: str, params: dict[str, Any] | None = None,
              references: list[Path] | tuple[Path, ...] = ()) -> GenerationRequest:
        params = {} if params is None else params
        if not isinstance(prompt, str) or len(prompt) > 10_000:
            raise InvalidRequest("prompt must be a string of at most 10000 characters")
        if not isinstance(params, dict):
            raise InvalidRequest("params must be a JSON object")
        if len(references) > MAX_REFERENCES:
            raise InvalidRequest(f"at most {MAX_REFERENCES} reference files")
        try:
            canonical_json(params)
        except ConsentError as e:
            raise InvalidRequest("params cannot be canonicalised (numbers must be finite)") from e
        hashes = []
        for p in references:
            try:
                hashes.append(file_digest(p))
            except OSError as e:
                raise InvalidRequest(f"cannot read reference {p.name}: {e.strerror}") from e
        return cls(prompt, params, tuple(references), tuple(hashes), request_digest(prompt, params, hashes))

    @classmethod
    def load(cls, path: str | Path) -> GenerationRequest:
        path = Path(path)
        try:
            data = path.read_bytes()[: MAX_REQUEST_BYTES + 1]
        except OSError as e:
            raise InvalidRequest(f"cannot read request file {path.name}: {e.strerror}") from e
        if len(data) > MAX_REQUEST_BYTES:
            raise InvalidRequest("request file is larger than 1 MiB")
        try:
            doc = strict_json_loads(data, f"request file {path.name}")
        except ConsentError as e:
            raise InvalidRequest(str(e)) from e
        if not isinstance(doc, dict) or not set(doc) <= {"prompt", "params", "references"} or "prompt" not in doc:
            raise InvalidRequest('a request is {"prompt": "...", "params": {...}, "references": [paths]}')
        refs = doc.get("references", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise InvalidRequest("references must be a list of file paths")
        base = path.resolve().parent
        return cls.build(doc["prompt"], doc.get("params", {}), tuple((base / r) for r in refs))
