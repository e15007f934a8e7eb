"""The one public way in to a registry from Python: :func:`cameo.open`.

    registry = cameo.open()              # CAMEO_HOME (or a path), its database and its key files
    with registry.session() as s: ...    # one transaction, carrying the registry's keys

It builds the engine with the registry's settings (SQLite's durability pragmas, 0600 file,
foreign keys, busy timeout; PostgreSQL's pre-ping), binds the root of trust to it, and hands out
the vault, the token keyrings and the encoders. The generator side (a Gate that screens) is
``conditioning.open``, which returns the same object with ``.gate()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from consent import TokenKeyring

from .registry._app import engine_for
from .registry._db import transaction
from .registry._home import Home
from ._likeness import Encoders
from .registry._vault import Vault


@dataclass(eq=False)
class Registry:
    """An open registry: its home, its engine (with the registry's settings and keys) and the
    services built on them. Close it (or use it as a context manager) to release connections."""

    home: Home
    engine: Engine = field(repr=False)
    face_model: Path | None = None
    _encoders: Encoders | None = field(default=None, repr=False)

    @classmethod
    def open(cls, home: str | Path | Home | None = None, *, db_url: str | None = None,
             face_model: str | Path | None = None) -> Self:
        h = home if isinstance(home, Home) else Home.resolve(home, db_url)
        return cls(h, engine_for(h), Path(face_model) if face_model else None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Return pooled connections (the engine is shared by every Registry of this home)."""
        self.engine.pool.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with transaction(self.engine) as s:
            yield s

    def vault(self) -> Vault:
        return self.home.vault()

    def keyring(self) -> TokenKeyring:
        """The token keyring that signs (the registry host only)."""
        return self.home.keyring()

    def verify_keyring(self) -> TokenKeyring:
        return self.home.verify_keyring()

    @property
    def encoders(self) -> Encoders:
        if self._encoders is None:
            self._encoders = Encoders(self.face_model)
        return self._encoders

    def __getstate__(self) -> Any:
        raise TypeError("an open registry cannot be pickled")


open = Registry.open  # noqa: A001 - the module-level spelling: cameo.open(home)
