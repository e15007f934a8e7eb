"""Gate-level commands as single library calls for the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cameo._app import engine_for
from cameo._db import transaction
from cameo._home import Home
from cameo._registry import get_generator, token_keyring
from cameo._request import GenerationRequest

from ._gate import Gate


def gate_for(home: Home, *, with_vault: bool = False, **kw: Any) -> Gate:
    eng = engine_for(home)
    with transaction(eng) as s:
        keyring = token_keyring(s, None)
    return Gate(eng, keyring, home.vault() if with_vault else None, **kw)


def check(home: Home, tokens: list[str], *, generator: str, request: GenerationRequest,
          now: datetime) -> dict[str, Any]:
    """Dry-run the gate for these tokens (consumes nothing; audited)."""
    eng = engine_for(home)
    with transaction(eng) as s:
        get_generator(s, generator)
    decision = gate_for(home).check(tokens, generator_id=generator, request=request, now=now)
    return decision.as_dict()
