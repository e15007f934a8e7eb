"""The generator author's way in: ``conditioning.open(home).gate(generator_id)``.

    import conditioning
    registry = conditioning.open()                     # CAMEO_HOME, its database and key files
    with registry.gate("my-sd") as gate:               # a Gate that screens, closed at the end
        with gate.release(request, tokens, now=now) as bundle:   # raises GateDenied
            ...

A Gate made this way verifies tokens with the key files' keyring, decrypts with the home's vault
and screens every request's reference media against the enrolled likenesses and the protected
list (reloaded whenever an enrollment or deletion commits anywhere). ``Gate(...)`` without a
screener refuses to build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cameo import Registry as _Registry

from ._gate import Gate
from ._screen import Screener


class Registry(_Registry):
    """:class:`cameo.Registry` plus the generator-facing services."""

    def screener(self) -> Screener:
        from ._generate import authority_for

        return Screener(self.engine, self.vault(), self.encoders, authority_for(self.home),
                        staging=self.home.staging_dir)

    def gate(self, generator_id: str | None = None, **kw: Any) -> Gate:
        """A Gate that screens, for ``generator_id`` (checked to be registered)."""
        if generator_id is not None:
            from cameo.registry import get_generator

            with self.session() as s:
                get_generator(s, generator_id)
        return Gate(self.engine, self.verify_keyring(), self.vault(), screener=self.screener(),
                    generator_id=generator_id, **kw)


def open(home: str | Path | None = None, *, db_url: str | None = None,  # noqa: A001
         face_model: str | Path | None = None) -> Registry:
    return Registry.open(home, db_url=db_url, face_model=face_model)
