"""Identity of an embedding model. Cheap to import (no model libraries).

A template is only ever compared with templates of the same :attr:`EncoderId.id`: the family and
version name the model and its preprocessing, the weights digest pins the exact weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EncoderId", "sha256_file"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class EncoderId:
    """Family, version and weights digest of an encoder; :attr:`id` is the stable string form.

    >>> EncoderId("dlib-resnet", "v1", "ab" * 32).id
    'dlib-resnet-v1@abababababababab'
    """

    family: str
    version: str
    weights_sha256: str

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.family):
            raise ValueError(f"invalid encoder family {self.family!r}")
        if not _TOKEN.match(self.version):
            raise ValueError(f"invalid encoder version {self.version!r}")
        if not _HEX64.match(self.weights_sha256):
            raise ValueError("weights_sha256 must be 64 lowercase hex digits")

    @property
    def id(self) -> str:
        """``<family>-<version>@<first 16 hex digits of the weights sha256>``."""
        return f"{self.family}-{self.version}@{self.weights_sha256[:16]}"

    def __str__(self) -> str:
        return self.id


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
