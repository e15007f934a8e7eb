"""The gate: the one door through which a generator gets a person's likeness.

For every token of a call, in order (each step exists for the reason given):

  1. parse        - a bounded PASETO v4.public string with a key-id footer; anything else is noise.
  2. signature    - signed by a registry token key on file (kid is a hint); forged tokens stop here.
  3. type         - the implicit assertion is the permission-token type tag: no other signed
                    object (a grant, a receipt) can pose as a token.
  4. audience     - the token names this generator, and the generator is registered: a token for
                    one model cannot drive another.
  5. validity     - not-before / expiry at ``now`` (read once per decision) within a bounded skew.
  6. request      - the digest recomputed from the actual prompt, parameters and media bytes equals
                    the one the token binds: no swapping the prompt or references after minting.
  7. grant live   - the grant exists, is not revoked, has not expired, has uses left, and names this
                    grantee. Read from the database inside the decision's transaction: no cache,
                    so a revocation committed before the decision starts always wins. The database
                    is not the root of trust: the owner's key must carry the registry's binding
                    signature, the grant must verify under it (its terms, expiry and use limit come
                    from the signed grant, not from columns), and the row's use count and revocation
                    must carry the registry's state MAC; an edited row is a denial
                    (``state.tampered``) with an integrity alert in the audit log.
  8. consent live - the owner's consent is not withdrawn or expired: the consent record verifies
                    under the owner's bound key and is the one the cameo row commits to, the row's
                    status carries its state MAC; restrictions come from the signed record.
  9. single use   - the token id was never consumed.
 10. consume      - (release only) the use is consumed atomically: a conditional UPDATE of the
                    grant's counter and an INSERT of the token id that fails on reuse; a concurrent
                    revocation or a race for the last use makes this fail, and the call is denied.
 11. release      - (release only) restrictions attached; templates decrypted; tensors handed over.

All tokens pass or nothing is released. Denials carry every reason and are written to the audit log
in the same transaction, which is committed before the caller sees the answer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cameo.registry import RawAppender
from cameo.registry import DatabaseError, compile_positional as _compile
from cameo.registry import EventTag, Outcome
from cameo import Reason
from cameo import GenerationRequest
from cameo import VaultError
from cameo.registry import Vault
from consent import DEFAULT_SKEW, ConsentError, Denied, GrantState, evaluate_grant, PermissionToken, TokenKeyring, digest, fmt_time, parse_token

from ._errors import GateDenied, ScreeningDenied

MAX_CAMEOS_PER_CALL = 2

class _Sql:
    """The hot path's statements, built from the models' table definitions and compiled once per
    dialect: SQLAlchemy's per-statement overhead (~50-100 us) would otherwise cost more than the
    signature check."""

    def __init__(self, dialect: str) -> None:
        from typing import cast

        from sqlalchemy import Table, bindparam, literal_column, select, update
        from sqlalchemy.dialects import postgresql, sqlite

        from cameo.registry import Account, Cameo, Follow, Generator, GrantRow, Template, TokenUse

        g, c, t, tu, gen, f = (cast(Table, m.__table__) for m in (GrantRow, Cameo, Template, TokenUse, Generator, Follow))
        o, e = Account.__table__.alias("o"), Account.__table__.alias("e")
        used = select(literal_column("1")).where(tu.c.jti == bindparam("jti")).scalar_subquery()
        known = select(literal_column("1")).where(gen.c.id == bindparam("generator")).scalar_subquery()
        live = (select(g.c.revoked_at, g.c.uses, g.c.owner_id, g.c.grantee_id, g.c.envelope, g.c.digest,
                       g.c.state_mac, o.c.handle, o.c.key_id, o.c.public_key, o.c.binding, e.c.handle,
                       c.c.id, c.c.status, c.c.consent_envelope, c.c.consent_digest, c.c.state_mac, c.c.wrapped_dek,
                       used, known)
                .select_from(g.join(o, o.c.id == g.c.owner_id).join(e, e.c.id == g.c.grantee_id)
                             .outerjoin(c, c.c.account_id == g.c.owner_id))
                .where(g.c.id == bindparam("grant_id")))
        self.live = _compile(live, dialect)
        # a release reads the grant row under its row lock (PostgreSQL), so the use count it read is
        # the one it replaces; SQLite's BEGIN IMMEDIATE already serialises every writer
        self.live_locked = _compile(live.with_for_update(of=g) if dialect == "postgresql" else live, dialect)
        # compare-and-set: the new count and its MAC replace exactly the state that was verified
        # (the signed use limit and the expiry are checked again here, as a last line)
        self.consume = _compile(
            update(g).where(g.c.id == bindparam("grant_id"), g.c.uses == bindparam("old"),
                            g.c.uses < bindparam("limit"), g.c.revoked_at.is_(None),
                            g.c.not_after > bindparam("stamp"))
            .values(uses=bindparam("new"), state_mac=bindparam("mac")), dialect)
        ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tu)
        self.use_once = _compile(
            ins.values(jti=bindparam("jti"), grant_id=bindparam("grant_id"), generator=bindparam("generator"),
                       used_at=bindparam("stamp")).on_conflict_do_nothing(index_elements=[tu.c.jti]), dialect)
        self.templates = _compile(select(t.c.modality, t.c.encoder_id, t.c.nonce, t.c.ciphertext)
                                  .where(t.c.cameo_id == bindparam("cameo_id")), dialect)
        # the same rows, found from the grant (the owner's cameo): a PostgreSQL release reads them in
        # its first round trip, with the live row, before it knows the cameo's id
        self.templates_of_grant = _compile(
            select(t.c.cameo_id, t.c.modality, t.c.encoder_id, t.c.nonce, t.c.ciphertext)
            .select_from(t.join(c, c.c.id == t.c.cameo_id).join(g, g.c.owner_id == c.c.account_id))
            .where(g.c.id == bindparam("grant_id")), dialect)
        a = Account.__table__
        self.follows = _compile(
            select(f.c.envelope, a.c.id, a.c.handle, a.c.key_id, a.c.public_key, a.c.binding)
            .select_from(f.join(a, a.c.id == f.c.follower_id))
            .where(((f.c.follower_id == bindparam("a")) & (f.c.followee_id == bindparam("b")))
                   | ((f.c.follower_id == bindparam("b")) & (f.c.followee_id == bindparam("a")))), dialect)


class Live(NamedTuple):
    """The registry's state for one token's grant, read inside the decision's transaction (a
    NamedTuple: the row becomes one without a per-field copy)."""

    revoked_at: str | None
    uses: int
    owner_id: str
    grantee_id: str
    envelope: bytes
    digest: str
    grant_mac: str | None
    owner_handle: str
    owner_key_id: str
    owner_public_key: bytes
    owner_binding: bytes | None
    grantee_handle: str
    cameo_id: str | None
    status: str | None
    consent_envelope: bytes | None
    consent_digest: str | None
    cameo_mac: str | None
    wrapped_dek: bytes | None
    used: Any
    generator: Any

    def __repr__(self) -> str:  # the wrapped data key is not for logs
        return f"Live(cameo_id={self.cameo_id!r}, status={self.status!r})"


@dataclass(frozen=True)
class TokenVerdict:
    """The outcome for one token: its claims when they could be read, and every failing reason."""

    index: int
    token: PermissionToken | None
    reasons: tuple[Reason, ...]
    live: Any = field(default=None, repr=False)
    grant: Any = field(default=None, repr=False)  # the verified Grant
    consent: Any = field(default=None, repr=False)  # the verified ConsentRecord (None: no cameo)

    @property
    def allowed(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "allowed": self.allowed,
                             "reasons": [r.as_dict() for r in self.reasons]}
        if self.token is not None:
            d.update(token_id=self.token.jti, grant_id=self.token.grant_id, cameo=self.token.owner,
                     grantee=self.token.grantee)
        return d


@dataclass(frozen=True)
class GateDecision:
    """Allowed only when every token is allowed (and there is at least one)."""

    verdicts: tuple[TokenVerdict, ...]
    extra: tuple[Reason, ...] = ()
    allowed: bool = field(init=False)
    reasons: tuple[Reason, ...] = field(init=False)

    def __post_init__(self) -> None:  # computed once, here: a decision is read on every release
        reasons = self.extra + tuple(r for v in self.verdicts for r in v.reasons)
        object.__setattr__(self, "reasons", reasons)
        object.__setattr__(self, "allowed", bool(self.verdicts) and not reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "tokens": [v.as_dict() for v in self.verdicts],
                "reasons": [r.as_dict() for r in self.reasons]}


class _Denial(Exception):
    def __init__(self, decision: GateDecision, findings: list[Any] | None = None) -> None:
        self.decision = decision
        self.findings = findings or []


class Digested(Protocol):
    """What notification and signing read of a request: its digest (a remote release's request
    stays on the generator's host; the registry keeps its digest)."""

    @property
    def digest(self) -> str: ...


def notify(append: Callable[..., Any], findings: Sequence[Any], *, generator_id: str, request: Digested,
           now: datetime) -> None:
    """Tell each owner whose likeness was found without consent (an entry in their usage log).
    ``append(event, now=, subject=, detail=)`` writes an audit entry in the caller's transaction."""
    for f in findings:
        if f.subject is not None:
            append(EventTag.SCREEN_MATCH, outcome=Outcome.DENIED, now=now, subject=f.subject,
                         detail={"generator": generator_id, "request_digest": request.digest,
                                 "reasons": [f.reason.as_dict()], **f.detail})


def _pipelines() -> bool:
    """Whether psycopg's pipeline mode is available (libpq 14 or later)."""
    try:
        import psycopg
    except ImportError:
        return False
    return bool(psycopg.Pipeline.is_supported())


def _wipe(items: list[dict[str, Any]]) -> None:
    """Zero decrypted template arrays that will not be handed over."""
    for it in items:
        for m in ("face", "voice"):
            if it.get(m) is not None:
                it[m][...] = 0


class _Rescan(Exception):
    """The likeness directory moved while a decision was being made: scan again and retry."""


class Gate:
    """Verifies tokens against the live registry. ``check`` inspects; ``release`` enforces. Both
    screen the request's reference media for enrolled likenesses and give the same verdict for
    the same request and tokens; only ``release`` consumes uses and hands over templates.

    Build one with ``conditioning.open(home).gate(generator_id)``. A Gate always screens: the
    ``screener`` is required, and one that skips screening must be asked for by name
    (``screener=UnsafeNoScreening()``, which warns)."""

    def __init__(self, engine: Engine, keyring: TokenKeyring, vault: Vault | None = None, *,
                 screener: Any = None, skew: timedelta = DEFAULT_SKEW, max_cameos: int = MAX_CAMEOS_PER_CALL,
                 trust: Any = None, generator_id: str | None = None) -> None:
        from cameo.registry import trust_for

        from ._errors import GateMisconfigured

        if screener is None:
            raise GateMisconfigured(
                "a Gate screens reference media for enrolled likenesses: build it with "
                "conditioning.open(home).gate(generator_id), or pass screener=UnsafeNoScreening() to skip "
                "screening on purpose")
        self._generator_id = generator_id

        self._trust = trust or trust_for(engine)
        if self._trust is None:
            from cameo import NotInitialised

            raise NotInitialised("the gate needs the registry's keys: build it on the home's engine")
        # verified documents and bound keys, by their exact stored bytes (envelopes are immutable,
        # so a cache hit is the same verification; bounded)
        self._docs: dict[tuple[Any, ...], Any] = {}
        self._engine = engine
        self._keyring = keyring
        self._vault = vault
        self._skew = skew
        self._max_cameos = max_cameos
        self._screener = screener
        self._sql = _Sql(engine.dialect.name)
        self._sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._dbapi_errors = (engine.dialect.loaded_dbapi.Error, SQLAlchemyError)
        self._append = RawAppender(engine.dialect.name, self._trust.audit_key)
        self._pipelined = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg" and _pipelines()

    def __repr__(self) -> str:
        return f"Gate({self._engine.dialect.name}, generator={self._generator_id!r}, screener={self._screener!r})"

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gen(self, generator_id: str | None) -> str:
        gid = generator_id or self._generator_id
        if not gid:
            from ._errors import GateMisconfigured

            raise GateMisconfigured("no generator id: pass generator_id= or build the gate for one generator")
        return gid

    @property
    def last_log_entries(self) -> tuple[str, ...]:
        """The audit log entry ids of this thread's last released decision, one per token (what
        the output's provenance names: each is provable in the transparency log)."""
        return tuple(getattr(self._local, "entries", ()))

    @property
    def last_decision(self) -> GateDecision | None:
        """The decision of this thread's last ``release`` (its verified tokens included)."""
        return getattr(self._local, "last", None)

    # -- steps 1-9 ------------------------------------------------------------------------------
    def _parse(self, index: int, token: str, *, generator_id: str, request: GenerationRequest,
               now: datetime) -> TokenVerdict:
        """Steps 1-6: everything that needs no database, done before the decision's transaction
        starts (the registry is not locked while a signature is checked)."""
        try:
            tok = parse_token(token, self._keyring)  # steps 1-3
        except ConsentError as e:
            code = {"SignatureInvalid": "token.signature", "WrongDocumentType": "token.type"}.get(
                type(e).__name__, "token.malformed")
            return TokenVerdict(index, None, (Reason(code, str(e)),))
        decision = tok.check(audience=generator_id, request_digest=request.digest, now=now, skew=self._skew)
        return TokenVerdict(index, tok, decision.reasons if isinstance(decision, Denied) else ())  # steps 4-6

    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        hit = self._docs.get(key)
        if hit is None:
            if len(self._docs) > 8192:
                self._docs.clear()
            hit = self._docs[key] = make()
        return hit

    def _owner_key(self, live: Live) -> Any:
        """The owner's key, only as the registry bound it (raises IntegrityError)."""
        return self._cached(("key", live.owner_id, live.owner_handle, live.owner_key_id, bytes(live.owner_public_key),
                             bytes(live.owner_binding or b"")),
                            lambda: self._trust.account_key(live.owner_id, live.owner_handle, live.owner_key_id,
                                                            bytes(live.owner_public_key), live.owner_binding))

    def _doc(self, cls: Any, data: bytes, key: Any) -> Any:
        return self._cached((cls.TYPE, bytes(data), key.raw), lambda: cls.from_bytes(bytes(data), key))

    def _integrity(self, live: Live, tok: PermissionToken) -> tuple[Any, Any, str | None]:
        """Steps 7-8's evidence: the grant and consent record verified under the owner's bound key,
        the rows' state under their MACs. Returns (grant, consent, problem)."""
        from cameo.registry import IntegrityError
        from consent import ConsentError, ConsentRecord, Grant

        try:
            owner_key = self._owner_key(live)
            grant = self._doc(Grant, live.envelope, owner_key)
        except (IntegrityError, ConsentError) as e:
            return None, None, f"the grant or its owner's key was altered ({e})"
        if (grant.id != tok.grant_id or grant.digest != live.digest or grant.owner != live.owner_handle
                or grant.grantee != live.grantee_handle):
            return None, None, "the grant row does not hold the grant it names"
        if not self._trust.grant_ok(live.grant_mac, grant.id, live.digest, live.owner_id, live.grantee_id,
                                    live.uses, live.revoked_at):
            return grant, None, "the grant's use count or revocation was altered outside cameo"
        consent = None
        if live.cameo_id is not None:
            try:
                consent = self._doc(ConsentRecord, live.consent_envelope or b"", owner_key)
            except ConsentError as e:
                return grant, None, f"the consent record was altered ({e})"
            if (consent.digest != live.consent_digest or consent.owner != live.owner_handle
                    or not self._trust.cameo_ok(live.cameo_mac, live.cameo_id, live.owner_id, live.status or "",
                                                live.consent_digest or "")):
                return grant, None, "the cameo's status or consent record was altered outside cameo"
        return grant, consent, None

    def _mutual(self, cur: Any, live: Live) -> bool:
        """Both follows exist and each verifies under its follower's bound key."""
        from consent import ConsentError, Follow
        from cameo.registry import IntegrityError

        q = self._sql.follows
        cur.execute(q.sql, q.args(a=live.owner_id, b=live.grantee_id))
        seen = set()
        for env, aid, handle, kid, pub, binding in cur.fetchall():
            if env is None:
                continue
            try:
                key = self._trust.account_key(aid, handle, kid, bytes(pub), binding)
                doc = Follow.from_bytes(bytes(env), key)
            except (IntegrityError, ConsentError):
                continue
            seen.add((doc.follower, doc.followee))
        return {(live.owner_handle, live.grantee_handle), (live.grantee_handle, live.owner_handle)} <= seen

    def _verify(self, cur: Any, parsed: TokenVerdict, *, generator_id: str, now: datetime,
                lock: bool = False, prefetched: dict[int, Any] | None = None) -> TokenVerdict:
        """Steps 7-9, against the live registry inside the decision's transaction (``prefetched``:
        the live rows already read in this transaction, by token index)."""
        tok = parsed.token
        if tok is None:
            return parsed
        if prefetched is not None:
            row = prefetched[parsed.index]
        else:
            q = self._sql.live_locked if lock else self._sql.live
            cur.execute(q.sql, q.args(jti=tok.jti, generator=generator_id, grant_id=tok.grant_id))
            row = cur.fetchone()
        if row is None:
            return TokenVerdict(parsed.index, tok, parsed.reasons + (
                Reason("grant.unknown", "the token's grant is not in this registry"),))
        live = Live._make(row)
        reasons = list(parsed.reasons)
        if live.generator is None:  # step 4, second half
            reasons.append(Reason("generator.unknown", f"generator {generator_id!r} is not registered"))
        grant, consent, problem = self._integrity(live, tok)
        if problem is not None:
            reasons.append(Reason("state.tampered", problem))
            return TokenVerdict(parsed.index, tok, tuple(reasons), live)
        # steps 7-8: the live rules (consent.evaluate_grant, the same function minting applies), over
        # the signed grant and consent record and the MAC-verified state
        mutual = (consent is not None and consent.audience == "mutuals" and tok.grantee != tok.owner
                  and self._mutual(cur, live))
        state = GrantState(revoked=live.revoked_at is not None, uses=live.uses,
                           consent_withdrawn=consent is not None and live.status != "active", mutual=mutual)
        rules = evaluate_grant(grant, state, consent=consent, grantee=tok.grantee, generator=tok.audience,
                               purpose=tok.purpose, modalities=tok.modalities, now=now, owner=tok.owner)
        if isinstance(rules, Denied):
            reasons.extend(rules.reasons)
        # step 9
        if live.used is not None:
            reasons.append(Reason("token.used", "the token was already used"))
        return TokenVerdict(parsed.index, tok, tuple(reasons), live, grant, consent)

    def _connection(self) -> Any:
        """This thread's DB-API connection, kept for the Gate's lifetime: a pool checkout and
        check-in (with its reset) per decision costs ~100 us, more than the rest of the SQL. The
        pool's proxy is kept (``close`` hands it back); statements go to the driver's connection
        underneath it, without the proxy's per-call layer."""
        raw = getattr(self._local, "raw", None)
        if raw is None:
            fairy = self._engine.raw_connection()
            self._local.fairy, raw = fairy, fairy.dbapi_connection
            self._local.raw = raw
        return raw

    @contextlib.contextmanager
    def _txn(self) -> Iterator[tuple[Any, Any]]:
        """One transaction on the thread's DB-API connection (the hot path: no ORM, no Core
        execution context). Commits if the block returns, rolls back if it raises."""
        raw = self._connection()
        cur = raw.cursor()
        try:
            if self._sqlite:
                cur.execute("BEGIN IMMEDIATE")  # writers serialise at the start of the decision
            yield raw, cur
            raw.commit()
        except BaseException as e:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the original error matters more; drop the connection
                self.close()
            if isinstance(e, self._dbapi_errors):
                self.close()
                raise DatabaseError(f"database error: {type(e).__name__}") from e
            raise
        finally:
            cur.close()

    def close(self) -> None:
        """Return this thread's connection to the pool."""
        fairy = getattr(self._local, "fairy", None)
        self._local.raw = self._local.fairy = self._local.cursors = None
        if fairy is not None:
            try:
                fairy.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def _audit(self, cur: Any, event: EventTag, decision: GateDecision, *, generator_id: str,
               request: GenerationRequest, now: datetime) -> list[str]:
        """One entry per token (one INSERT each: no row shared with other decisions); returns the
        ids of the per-token entries, in the order of the tokens."""
        ids: list[str] = []
        allowed = decision.allowed
        outcome = Outcome.ALLOWED if allowed else Outcome.DENIED
        all_reasons = None if allowed else [r.as_dict() for r in decision.reasons]
        for v in decision.verdicts:
            detail: dict[str, Any] = {"generator": generator_id, "request_digest": request.digest}
            t = v.token
            if t is not None:
                detail.update(token_id=t.jti, grant_id=t.grant_id, cameo=t.owner, grantee=t.grantee)
            if not allowed:  # this token's own reasons, else the call's (another token or the screen)
                detail["reasons"] = [r.as_dict() for r in v.reasons] or all_reasons
            else:
                detail["reasons"] = []
            ids.append(self._append(cur, event, outcome=outcome, now=now,
                                    subject=v.live.owner_id if v.live is not None else None, detail=detail))
        if not decision.verdicts:  # no token at all: one entry for the call
            self._append(cur, event, outcome=Outcome.DENIED, now=now,
                         detail={"generator": generator_id, "reasons": [r.as_dict() for r in decision.reasons]})
        for v in decision.verdicts:  # a row that did not verify: an alert of its own, for the operator and owner
            for r in v.reasons:
                if r.code == "state.tampered" or r.code == "vault.integrity":
                    self._append(cur, EventTag.REGISTRY_INTEGRITY_ALERT, now=now,
                                 subject=v.live.owner_id if v.live is not None else None,
                                 detail={"what": str(event), "grant_id": v.token.grant_id if v.token else None,
                                         "reason": r.message})
        return ids

    def _parse_all(self, tokens: Sequence[str], *, generator_id: str, request: GenerationRequest,
                   now: datetime) -> tuple[list[TokenVerdict], list[Reason]]:
        extra: list[Reason] = []
        if not tokens:
            extra.append(Reason("token.none", "no permission token was presented"))
        if len(tokens) > self._max_cameos:
            extra.append(Reason("call.too_many", f"at most {self._max_cameos} cameos per call"))
        parsed = [self._parse(i, t, generator_id=generator_id, request=request, now=now)
                  for i, t in enumerate(tokens[: self._max_cameos + 4])]
        owners = [v.token.owner for v in parsed if v.token is not None]
        if len(set(owners)) != len(owners):
            extra.append(Reason("call.duplicate", "two tokens for the same cameo in one call"))
        return parsed, extra

    def _decide(self, cur: Any, parsed: tuple[list[TokenVerdict], list[Reason]], *, generator_id: str,
                now: datetime, lock: bool = False, prefetched: dict[int, Any] | None = None) -> GateDecision:
        verdicts = tuple(self._verify(cur, v, generator_id=generator_id, now=now, lock=lock, prefetched=prefetched)
                         for v in parsed[0])
        return GateDecision(verdicts, tuple(parsed[1]))

    def _judge(self, cur: Any, parsed: tuple[list[TokenVerdict], list[Reason]], *, generator_id: str,
               request: GenerationRequest, now: datetime, lock: bool,
               releasing: bool, prefetched: dict[int, Any] | None = None) -> tuple[GateDecision, list[Any]]:
        """Steps 1-9 and screening: the verdict both tiers share (``check`` and ``release`` agree
        on it for the same request and tokens). A release also needs a likeness to hand over
        (``cameo.none`` for an owner who never enrolled): the dry run answers whether the tokens
        are honoured, and a grant may be made before its owner enrolls."""
        decision = self._decide(cur, parsed, generator_id=generator_id, now=now, lock=lock, prefetched=prefetched)
        found: list[Any] = []
        if decision.allowed and releasing:
            missing = tuple(Reason("cameo.none", f"{v.token.owner} has no enrolled likeness to release")
                            for v in decision.verdicts if v.live is not None and v.live.cameo_id is None
                            and v.token is not None)
            if missing:
                decision = GateDecision(decision.verdicts, decision.extra + missing)
        if decision.allowed:
            if self._screener.stale(cur, "%s" if not self._sqlite else "?"):
                raise _Rescan
            toks = [v.token for v in decision.verdicts if v.token is not None]
            found = list(self._screener(request=request, tokens=toks, now=now))
            if found:
                decision = GateDecision(decision.verdicts, decision.extra + tuple(f.reason for f in found))
        return decision, found

    def _screened(self, run: Callable[[], Any], request: GenerationRequest) -> Any:
        """Scan the references (outside any transaction), then run the decision; if the likeness
        directory moved meanwhile, reload it and decide again (bounded)."""
        for _attempt in range(3):
            self._screener.ensure(request)
            try:
                return run()
            except _Rescan:
                self._screener.reload()
        from ._errors import ConditioningError

        raise ConditioningError("the likeness directory kept changing during the decision; try again")

    # -- tier 1: inspect ---------------------------------------------------------------------------
    def check(self, request: GenerationRequest, tokens: str | Sequence[str], *, generator_id: str | None = None,
              now: datetime) -> GateDecision:
        """Dry run of steps 1-9 and screening: consumes nothing; the decision is audited
        (``gate:check:*``), and owners whose likeness was found without consent are told."""
        generator_id = self._gen(generator_id)
        toks = [tokens] if isinstance(tokens, str) else list(tokens)
        parsed = self._parse_all(toks, generator_id=generator_id, request=request, now=now)

        def run() -> GateDecision:
            with self._txn() as (_, cur):
                decision, found = self._judge(cur, parsed, generator_id=generator_id, request=request, now=now,
                                              lock=False, releasing=False)
                self._audit(cur, EventTag.GATE_CHECK, decision, generator_id=generator_id, request=request, now=now)
                notify(lambda *a, **k: self._append(cur, *a, **k), found, generator_id=generator_id,
                       request=request, now=now)
            return decision

        return self._screened(run, request)  # type: ignore[no-any-return,unused-ignore]

    # -- tier 2: enforce ---------------------------------------------------------------------------
    def _consume(self, cur: Any, v: TokenVerdict, *, generator_id: str, stamp: str) -> Reason | None:
        """``stamp`` is the decision's time at second precision."""
        assert v.token is not None and v.live is not None
        live, uses = v.live, v.live.uses + 1
        mac = self._trust.grant_mac(v.token.grant_id, live.digest, live.owner_id, live.grantee_id, uses, None)
        q = self._sql.consume
        cur.execute(q.sql, q.args(new=uses, mac=mac, grant_id=v.token.grant_id, old=live.uses,
                                  limit=v.grant.max_uses, stamp=stamp))
        if cur.rowcount != 1:
            return Reason("grant.race", "the grant was revoked or used up while this call was being decided")
        q = self._sql.use_once
        cur.execute(q.sql, q.args(jti=v.token.jti, grant_id=v.token.grant_id, generator=generator_id, stamp=stamp))
        if cur.rowcount != 1:
            return Reason("token.used", "the token was already used")
        return None

    def decide_release(self, tokens: Sequence[str], *, generator_id: str | None = None, request: GenerationRequest,
                       now: datetime, load_templates: bool = True) -> tuple[GateDecision, list[dict[str, Any]]]:
        """Steps 1-11 in one transaction, committed before returning. Raises GateDenied on denial
        (after the denial is durably audited). Returns the decision and the decrypted items."""
        generator_id = self._gen(generator_id)
        parsed = self._parse_all(list(tokens), generator_id=generator_id, request=request, now=now)
        stamp = fmt_time(now)

        def run() -> tuple[GateDecision, list[dict[str, Any]]]:
            if self._pipelined and self._connection().info.transaction_status == 0:  # (0: idle)
                return self._release_pipelined(parsed, generator_id=generator_id, request=request, now=now,
                                               stamp=stamp, load_templates=load_templates)
            items: list[dict[str, Any]] = []
            with self._txn() as (conn, cur):
                decision, found = self._judge(cur, parsed, generator_id=generator_id, request=request, now=now,
                                              lock=True, releasing=load_templates)
                if decision.allowed:
                    for v in decision.verdicts:
                        r = self._consume(cur, v, generator_id=generator_id, stamp=stamp)  # step 10
                        if r is not None:
                            decision = GateDecision(decision.verdicts, decision.extra + (r,))
                            break
                if not decision.allowed:
                    raise _Denial(decision, found)  # rolls back any partial consumption
                if load_templates:
                    try:
                        items = [self._open(cur, v) for v in decision.verdicts]  # step 11
                    except VaultError as e:  # a template or key that does not open: tampered or moved
                        raise _Denial(GateDecision(decision.verdicts, decision.extra + (
                            Reason("vault.integrity", f"the cameo's templates do not decrypt ({e})"),))) from None
                entries = self._audit(cur, EventTag.GATE_RELEASE, decision, generator_id=generator_id,
                                      request=request, now=now)
            self._local.entries = tuple(entries)
            return decision, items

        self._local.entries = ()
        try:
            decision, items = self._screened(run, request)
        except _Denial as d:
            # the denial changes nothing but the log: record it in a transaction of its own, durably,
            # before the caller hears about it
            with self._txn() as (conn, cur):
                self._audit(cur, EventTag.GATE_RELEASE, d.decision, generator_id=generator_id, request=request, now=now)
                notify(lambda *a, **k: self._append(cur, *a, **k), d.findings, generator_id=generator_id,
                       request=request, now=now)
            self._local.last = d.decision
            if d.findings:
                raise ScreeningDenied(d.decision.reasons) from None
            raise GateDenied(d.decision.reasons) from None
        self._local.last = decision
        return decision, items

    def _release_pipelined(self, parsed: tuple[list[TokenVerdict], list[Reason]], *, generator_id: str,
                           request: GenerationRequest, now: datetime, stamp: str,
                           load_templates: bool) -> tuple[GateDecision, list[dict[str, Any]]]:
        """Steps 7-11 on PostgreSQL in two round trips and the commit (psycopg pipeline mode).

        1. BEGIN, each token's live row under its grant row lock (``FOR UPDATE``: a revocation that
           committed first is seen; one that comes later waits for this decision, exactly as the
           one-statement-at-a-time path), and the templates of each grant's cameo; one sync.
        2. The decision, screening and the templates' decryption here; then each use consumed (the
           compare-and-set UPDATE and the token-use INSERT) and the audit entries, sent together;
           one sync. A consume that changed no row (a race for the last use, a token used
           meanwhile) is a denial: the transaction rolls back, entries included, and the denial is
           recorded on its own as on the other path.
        3. COMMIT.
        (A request with reference media adds the screener's version check, a mutuals audience the
        follows: one round trip each.)"""
        sql = self._sql
        toks = [v for v in parsed[0] if v.token is not None]
        items: list[dict[str, Any]] = []
        with self._pg_txn() as (raw, cur):
            spare = iter(self._cursors(raw, 4 * len(toks)))  # (a cursor per statement in flight)
            with raw.pipeline() as pipe:
                cur.execute("BEGIN")  # queued with round trip 1 (psycopg's own BEGIN would wait for its reply)
                live_c = {v.index: next(spare) for v in toks}
                tpl_c = {v.index: next(spare) for v in toks} if load_templates else {}
                for v in toks:
                    assert v.token is not None
                    q = sql.live_locked
                    live_c[v.index].execute(q.sql, q.args(jti=v.token.jti, generator=generator_id,
                                                          grant_id=v.token.grant_id))
                    if load_templates:
                        tpl_c[v.index].execute(sql.templates_of_grant.sql, (v.token.grant_id,))
                pipe.sync()  # round trip 1
                rows = {i: c.fetchone() for i, c in live_c.items()}
                tpls = {i: c.fetchall() for i, c in tpl_c.items()}
                decision, found = self._judge(cur, parsed, generator_id=generator_id, request=request, now=now,
                                              lock=True, releasing=load_templates, prefetched=rows)
                if not decision.allowed:
                    raise _Denial(decision, found)
                if load_templates:
                    try:  # step 11's decryption, before anything is written
                        items = [self._open(cur, v, rows=[r[1:] for r in tpls[v.index] if r[0] == v.live.cameo_id])
                                 for v in decision.verdicts]
                    except VaultError as e:
                        raise _Denial(GateDecision(decision.verdicts, decision.extra + (
                            Reason("vault.integrity", f"the cameo's templates do not decrypt ({e})"),))) from None
                consumed = [self._consume_send(next(spare), next(spare), v, generator_id=generator_id, stamp=stamp)
                            for v in decision.verdicts]  # step 10
                entries = self._audit(cur, EventTag.GATE_RELEASE, decision, generator_id=generator_id,
                                      request=request, now=now)
            # round trip 2: the pipeline's closing sync
            for upd, ins in consumed:
                r = (Reason("grant.race", "the grant was revoked or used up while this call was being decided")
                     if upd.rowcount != 1 else
                     Reason("token.used", "the token was already used") if ins.rowcount != 1 else None)
                if r is not None:
                    _wipe(items)
                    raise _Denial(GateDecision(decision.verdicts, decision.extra + (r,)), found)
            self._local.entries = tuple(entries)
        return decision, items

    def _cursors(self, raw: Any, n: int) -> list[Any]:
        """``n + 1`` cursors of this thread's connection, kept between decisions (a psycopg cursor
        costs ~30 us to make: more than a queued statement); the first is the transaction's own."""
        kept = getattr(self._local, "cursors", None)
        if kept is None or kept[0] is not raw:
            kept = self._local.cursors = (raw, [])
        while len(kept[1]) < n + 1:
            kept[1].append(raw.cursor())
        return kept[1][1:n + 1]

    @contextlib.contextmanager
    def _pg_txn(self) -> Iterator[tuple[Any, Any]]:
        """A transaction the caller begins itself (``BEGIN`` queued in a pipeline): the connection is
        in autocommit mode meanwhile, so psycopg sends no BEGIN of its own. Commits (one round
        trip) if the block returns, rolls back if it raises; back out of autocommit either way."""
        raw = self._connection()
        raw.autocommit = True
        self._cursors(raw, 0)
        cur = self._local.cursors[1][0]
        try:
            yield raw, cur
            raw.commit()
        except BaseException as e:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the original error matters more; drop the connection
                self.close()
                raw = None
            if isinstance(e, self._dbapi_errors):
                self.close()
                raw = None
                raise DatabaseError(f"database error: {type(e).__name__}") from e
            raise
        finally:
            if raw is not None:
                try:
                    raw.autocommit = False
                except Exception:  # noqa: BLE001 - a broken connection: not kept
                    self.close()

    def _consume_send(self, upd: Any, ins: Any, v: TokenVerdict, *, generator_id: str, stamp: str) -> tuple[Any, Any]:
        """Step 10's two statements, queued (pipeline mode) on two cursors, whose row counts are
        read after the sync."""
        assert v.token is not None and v.live is not None
        live, uses = v.live, v.live.uses + 1
        mac = self._trust.grant_mac(v.token.grant_id, live.digest, live.owner_id, live.grantee_id, uses, None)
        q = self._sql.consume
        upd.execute(q.sql, q.args(new=uses, mac=mac, grant_id=v.token.grant_id, old=live.uses,
                                  limit=v.grant.max_uses, stamp=stamp))
        q = self._sql.use_once
        ins.execute(q.sql, q.args(jti=v.token.jti, grant_id=v.token.grant_id, generator=generator_id, stamp=stamp))
        return upd, ins

    def _open(self, cur: Any, v: TokenVerdict, rows: list[Any] | None = None) -> dict[str, Any]:
        """Step 11 for one token: ``rows`` are the cameo's template rows when already read."""
        assert v.token is not None and v.live is not None
        live = v.live
        consent = v.consent
        item: dict[str, Any] = {"cameo_id": live.cameo_id or v.token.owner, "face": None, "face_encoder": None,
                                "voice": None, "voice_encoder": None,
                                # from the owner-signed record, never from a column
                                "restrictions": consent.restrictions if consent is not None else (),
                                "consent_id": consent.id if consent is not None else "",
                                "consent_digest": live.consent_digest or "",
                                "grant_id": v.token.grant_id, "token_id": v.token.jti}
        if live.cameo_id is None or self._vault is None:
            return item
        if rows is None:
            cur.execute(self._sql.templates.sql, (live.cameo_id,))
            rows = cur.fetchall()
        key = self._vault.data_key(bytes(live.wrapped_dek) if live.wrapped_dek is not None else None, live.cameo_id)
        for modality, encoder_id, nonce, ct in rows:
            if modality not in v.token.modalities:
                continue  # only what the grant covers is released
            plain = self._vault.open(None, live.cameo_id, modality, encoder_id, bytes(nonce), bytes(ct), key=key)
            # exactly what the owner's consent record commits to (modality, encoder and digest)
            if consent is None or (modality, encoder_id, digest(plain)) not in {
                    (t.modality, t.encoder, t.digest) for t in consent.templates}:
                raise VaultError(f"the {modality} template is not the one the owner's consent record commits to")
            item[modality] = np.frombuffer(plain, dtype="<f4").copy()
            item[f"{modality}_encoder"] = encoder_id
        return item

    @contextlib.contextmanager
    def release(self, request: GenerationRequest, tokens: str | Sequence[str], *, generator_id: str | None = None,
                now: datetime) -> Iterator[Any]:
        """Enforcing tier: yields a ConditioningBundle; raises GateDenied(reasons). Tensors are wiped on exit."""
        from ._bundle import _issue_bundle

        generator_id = self._gen(generator_id)
        toks = [tokens] if isinstance(tokens, str) else list(tokens)
        decision, items = self.decide_release(toks, generator_id=generator_id, request=request, now=now)
        bundle = _issue_bundle(generator_id=generator_id, request_digest=request.digest, items=items)
        try:
            with bundle:
                yield bundle
        finally:
            for it in items:  # the decrypted arrays too
                for m in ("face", "voice"):
                    if it.get(m) is not None:
                        it[m][...] = 0
