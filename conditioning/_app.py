"""Gate-level commands as single library calls for the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cameo.registry import engine_for
from cameo.registry import transaction
from cameo.registry import Home
from cameo import GenerationRequest



def init(home: Home, *, now: datetime) -> dict[str, Any]:
    """The registry (cameo's init) plus the provenance chain generated media is signed with."""
    from cameo.registry import init as init_registry

    from .provenance import ProvenanceAuthority

    result = init_registry(home, now=now)
    if not (home.provenance_dir / "root.pem").exists():
        ProvenanceAuthority.create(home.provenance_dir, now=now)
        result["created"].append("provenance certificates")
    return result


def check(home: Home, tokens: list[str], *, generator: str, request: GenerationRequest,
          now: datetime, face_model: Any = None) -> dict[str, Any]:
    """Dry-run the gate for these tokens: the same verdict as a release (screening included),
    consuming nothing; audited."""
    from ._open import Registry

    with Registry.open(home, face_model=face_model) as registry:
        gate = registry.gate(generator)
        try:
            decision = gate.check(request, tokens, now=now)
        finally:
            gate.close()
    return decision.as_dict()


def generator_add(home: Home, gen_id: str, *, adapter: str, config: str | None, public_key: Any,
                  now: datetime) -> dict[str, Any]:
    import json

    from cameo import BadInput
    from cameo.registry import register_generator

    from .adapters import ADAPTERS

    if adapter not in ADAPTERS:
        raise BadInput(f"unknown adapter {adapter[:40]!r}: one of {', '.join(sorted(ADAPTERS))}")
    try:
        cfg = json.loads(config) if config else {}
    except ValueError as e:
        raise BadInput("--config is not valid JSON") from e
    if not isinstance(cfg, dict):
        raise BadInput("--config must be a JSON object")
    key = None
    if public_key is not None:
        try:
            raw = public_key.read_bytes()
        except OSError as e:
            raise BadInput(f"cannot read {public_key.name}: {e.strerror}") from e
        import base64

        request_key = None
        if raw.lstrip().startswith(b"{"):  # the file `cameo generator keygen` writes
            try:
                doc = json.loads(raw)
                key, request_key = base64.b64decode(doc["x25519"], validate=True), str(doc["ed25519"])
                if doc.get("generator") not in (None, gen_id):
                    raise BadInput(f"{public_key.name} is the public key file of generator {doc['generator']!r}")
                from consent import VerifyKey

                VerifyKey.from_b64(request_key)
            except (ValueError, KeyError, TypeError) as e:
                raise BadInput(f"{public_key.name} is not a generator public key file (x25519, ed25519)") from e
            cfg["request_key_b64"] = request_key
        else:
            try:  # 32 raw bytes as they are (any byte may look like whitespace), else base64 text
                key = raw if len(raw) == 32 else base64.b64decode(raw.strip(), validate=True)
            except ValueError as e:
                raise BadInput("the public key file must hold 32 raw bytes or their base64") from e
        if len(key) != 32:
            raise BadInput("an X25519 public key is 32 bytes")
        cfg["public_key_b64"] = base64.b64encode(key).decode()
    if adapter == "sealed" and key is None:
        raise BadInput("the sealed adapter needs --public-key (the generator's X25519 public key)")
    with transaction(engine_for(home)) as s:
        register_generator(s, gen_id, adapter=adapter, config=cfg, public_key=key, now=now)
    return {"id": gen_id, "adapter": adapter, "config": cfg}


def generator_list(home: Home) -> dict[str, Any]:
    import json

    from sqlalchemy import select

    from cameo.registry import Generator

    with transaction(engine_for(home)) as s:
        rows = s.execute(select(Generator).order_by(Generator.id)).scalars().all()
        return {"generators": [{"id": g.id, "adapter": g.adapter, "config": json.loads(g.config),
                                "sealed": g.public_key is not None, "created": g.created_at} for g in rows]}
