"""Hash-chained audit entries: each entry's hash covers its fields and the previous hash, so an
edited, deleted, inserted or reordered entry breaks the chain at that point.

The hashed bytes are a length-prefixed framing (the DSSE PAE idea applied field by field), so no
JSON canonicalisation is on the hot path and no two field lists encode alike::

    "cameo.audit.v1" then, for each of prev, seq, ts, event, actor, subject, detail:
        LEN(field) SP field SP          (a missing actor/subject is encoded as "-1 ")
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64
_TAG = b"cameo.audit.v1 "


def encode_detail(detail: dict[str, Any]) -> str:
    """Sorted-key compact JSON for an entry's detail. The hash covers the stored string itself."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev_hash: str, *, seq: int, ts: str, event: str, actor: str | None, subject: str | None,
               detail: str) -> str:
    h = hashlib.sha256(_TAG)
    for f in (prev_hash, str(seq), ts, event, actor, subject, detail):
        if f is None:
            h.update(b"-1 ")
        else:
            b = f.encode()
            h.update(b"%d %s " % (len(b), b))
    return h.hexdigest()
