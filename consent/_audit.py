"""Hash-chained audit entries: each entry's hash covers its fields and the previous hash, so an
edited, deleted, inserted or reordered entry breaks the chain at that point.

The chain is keyed: each entry's hash is an HMAC-SHA256 under the registry's audit key (derived
from the vault KEK, which is kept outside the database), so whoever can only write to the
database cannot recompute the chain after deleting or editing an entry.

The hashed bytes are a length-prefixed framing (the DSSE PAE idea applied field by field), so no
JSON canonicalisation is on the hot path and no two field lists encode alike::

    "cameo.audit.v1" then, for each of prev, seq, ts, event, actor, subject, detail:
        LEN(field) SP field SP          (a missing actor/subject is encoded as "-1 ")
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

GENESIS = "0" * 64
_TAG = b"cameo.audit.v1 "


def encode_detail(detail: dict[str, Any]) -> str:
    """Sorted-key compact JSON (UTF-8, not ASCII-escaped) for an entry's detail. The hash covers
    the stored string itself, so verification never re-encodes. orjson, not the json module: this
    runs on every gate decision and is one C call instead of a Python encoder object per call.
    Non-finite floats are stored as ``null`` (standard JSON has no NaN)."""
    return orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(prev_hash: str, *, key: bytes, seq: int, ts: str, event: str, actor: str | None,
               subject: str | None, detail: str) -> str:
    """HMAC-SHA256 under ``key`` (the registry's audit key) of the framed fields."""
    framed = [b"-1 " if f is None else b"%d %s " % (len(b := f.encode()), b)
              for f in (prev_hash, str(seq), ts, event, actor, subject, detail)]
    return hmac.new(key, _TAG + b"".join(framed), hashlib.sha256).hexdigest()


# -- the transparency log's entries (audit.v2) ------------------------------------------------------
_LOG_TAG = b"cameo.log.entry.v1 "
_MAC_TAG = b"cameo.audit.v2 "


def log_entry_bytes(*, entry_id: str, ts: str, event: str, actor: str | None, subject: str | None,
                    detail: str) -> bytes:
    """The canonical bytes of one log entry, the ``entry`` of its Merkle leaf
    (``SHA-256(0x00 || these bytes)``)::

        "cameo.log.entry.v1 " then, for each of entry_id, ts, event, actor, subject, detail:
            LEN(field) SP field SP          (a missing actor/subject is encoded as "-1 ")

    The entry id is drawn at random when the entry is written; the position in the log (the leaf
    index) is not part of the entry: the tree fixes it."""
    return _LOG_TAG + b"".join(b"-1 " if f is None else b"%d %s " % (len(b := f.encode()), b)
                               for f in (entry_id, ts, event, actor, subject, detail))


def entry_mac(key: bytes, entry: bytes) -> str:
    """Hex HMAC-SHA256 under the registry's audit key of an entry's canonical bytes: kept with the
    entry from the moment it is written, so an entry edited before it is in a signed checkpoint
    (or after) does not verify."""
    return hmac.new(key, _MAC_TAG + entry, hashlib.sha256).hexdigest()
