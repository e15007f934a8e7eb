"""Who is asking: every write (and every owner-only read) is signed by the acting party's own
Ed25519 key over method, path, query, body digest, time and a nonce (:mod:`consent._httpsig`).

* ``account:<handle>``: the key the registry bound to that account;
* ``generator:<id>``: the request key the operator registered for that generator;
* ``device:<id>``: a browser's device key, only under a live delegation from the owner
  (:mod:`service._web`): the route then checks the power it needs.

A request that is unsigned, wrongly signed, older or newer than :data:`SKEW`, or whose nonce was
already seen through any worker (the ``http_nonces`` table's primary key) gets 401 and changes
nothing. Rate limits are per key (and per address for unsigned calls), per worker.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from consent import ConsentError, VerifyKey
from consent._httpsig import SignedRequest, parse_signature, verify_request

from ._problems import Problem

SKEW = 300  # seconds either side of the server's clock


@dataclass(frozen=True)
class Party:
    kind: str  # account | generator | device
    name: str

    @property
    def keyid(self) -> str:
        return f"{self.kind}:{self.name}"


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.pop(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level < 1.0:
                self._buckets[key] = (level, now)
                wait = max(1, int((1.0 - level) / self.rate + 0.999))
                raise Problem(429, f"too many requests for {key}; retry in {wait} s", code="rate-limited",
                              headers={"Retry-After": str(wait)})
            self._buckets[key] = (level - 1.0, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)


def _key_for(home: Any, signed: SignedRequest, new_account_key: bytes | None) -> VerifyKey:
    from cameo._errors import NotFound
    from cameo.registry import engine_for, get_generator, transaction
    from cameo.registry import _services as reg

    if signed.kind in ("account", "device") and new_account_key is not None:
        return VerifyKey(new_account_key)  # a new account's key, or a device claiming its delegation
    if signed.kind == "device":
        from ._web import device_key

        return device_key(home, signed.name)
    try:
        with transaction(engine_for(home)) as s:
            if signed.kind == "account":
                return reg.account_key(s, reg.get_account(s, signed.name))
            if signed.kind == "generator":
                gen = get_generator(s, signed.name)
                b64 = json.loads(gen.config).get("request_key_b64")
                if not b64:
                    raise Problem(401, f"generator {signed.name!r} has no request key registered: re-register it "
                                       "with the public key file from `cameo generator keygen`", code="no-request-key")
                return VerifyKey.from_b64(b64)
    except NotFound:
        raise Problem(401, f"unknown signer {signed.keyid!r}", code="unknown-signer") from None
    raise Problem(401, f"a {signed.kind} key cannot sign this request", code="unknown-signer")


def _record_nonce(eng: Any, signed: SignedRequest, now: int) -> None:
    """Insert the request's nonce (a second insert of the same one fails: a replay), visible to
    every worker at once but committed without waiting for the disk (``synchronous_commit=off``
    on PostgreSQL, ``synchronous=OFF`` for this one statement's SQLite connection): a nonce only
    matters for :data:`SKEW`, and what a crash could let through again inside that window is a
    request whose effect is refused the second time anyway (a consumed token, a stored document
    id, a used release). It saves one fsync per signed request (bench/serve.py)."""
    from cameo.registry import DatabaseError
    from cameo.registry._service_models import HttpNonce
    from sqlalchemy import insert
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    expires = signed.created + SKEW + 1
    try:
        if eng.dialect.name != "sqlite":
            with eng.begin() as conn:
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                if now % 16 == 0:
                    conn.execute(delete(HttpNonce).where(HttpNonce.expires_at < now))
                conn.execute(insert(HttpNonce).values(key_id=signed.keyid, nonce=signed.nonce, expires_at=expires))
            return
        with eng.connect() as conn:  # SQLite: the driver connection (autocommit mode; we say BEGIN)
            cur = conn.connection.driver_connection.cursor()
            level = int(cur.execute("PRAGMA synchronous").fetchone()[0])
            cur.execute("PRAGMA synchronous=OFF")
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    if now % 16 == 0:
                        cur.execute("DELETE FROM http_nonces WHERE expires_at < ?", (now,))
                    cur.execute("INSERT INTO http_nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)",
                                (signed.keyid, signed.nonce, expires))
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
            finally:
                cur.execute(f"PRAGMA synchronous={level}")
                cur.close()
    except sqlite3.IntegrityError as e:
        raise DatabaseError("database error: IntegrityError") from SqlIntegrityError(str(e), None, e)
    except sqlite3.Error as e:
        raise DatabaseError(f"database error: {type(e).__name__}") from e
    except DBAPIError as e:
        raise DatabaseError(f"database error: {type(e.orig).__name__ if e.orig else type(e).__name__}") from e
    except SQLAlchemyError as e:
        raise DatabaseError(f"database error: {type(e).__name__}") from e


def authenticate(home: Any, *, method: str, path: str, query: str, body: bytes, headers: dict[str, str],
                 limiter: RateLimiter, new_account_key: bytes | None = None) -> Party:
    """Verify a request's signature and freshness, record its nonce (once), apply the rate limit."""
    from cameo.registry import DatabaseError, engine_for

    try:
        signed = parse_signature(headers)
    except ConsentError as e:
        raise Problem(401, str(e), code="unsigned", headers={"WWW-Authenticate": 'Signature realm="cameo"'}) from None
    now = int(time.time())
    if abs(now - signed.created) > SKEW or (signed.expires is not None and signed.expires < now):
        raise Problem(401, f"the request's signature is stale or from the future (created {signed.created}, "
                           f"now {now}; allowed skew {SKEW} s): check the clock", code="stale-signature")
    limiter.take(signed.keyid)
    key = _key_for(home, signed, new_account_key)
    try:
        verify_request(signed, key, method=method, path=path, query=query, body=body, headers=headers)
    except ConsentError as e:
        raise Problem(401, f"the request's signature does not verify for {signed.keyid}: {e}",
                      code="bad-signature") from None
    try:
        _record_nonce(engine_for(home), signed, now)
    except DatabaseError as e:
        if isinstance(e.__cause__, SqlIntegrityError):
            raise Problem(401, "this signed request was already used (replay)", code="replayed") from None
        raise
    return Party(signed.kind, signed.name)
