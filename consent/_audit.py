"""Hash-chained audit entries: each entry's hash covers its fields and the previous hash, so an
edited, deleted, inserted or reordered entry breaks the chain at that point."""

from __future__ import annotations

from typing import Any

from ._canonical import canonical_json, pae, sha256_hex

AUDIT_TYPE = "application/vnd.cameo.audit-entry.v1+json"
GENESIS = "0" * 64


def entry_hash(prev_hash: str, *, seq: int, ts: str, event: str, actor: str | None, subject: str | None,
               detail: str) -> str:
    """SHA-256 over the DSSE-style encoding of the canonical entry, chained to ``prev_hash``."""
    body: dict[str, Any] = {"actor": actor, "detail": detail, "event": event, "prev": prev_hash, "seq": seq,
                            "subject": subject, "ts": ts}
    return sha256_hex(pae(AUDIT_TYPE, canonical_json(body)))
