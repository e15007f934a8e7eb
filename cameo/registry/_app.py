"""What each command does, as one library call: resolve the home, open one transaction, call the
services, return a JSON-able dict. The CLI only parses, calls one of these, prints, and maps errors.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from consent import Grant, Revocation, SigningKey, TokenRequest, fmt_time, new_id

from . import _audit as audit
from . import _services as reg
from ._db import bind_trust, make_engine, require_schema, restrict_sqlite_file, transaction, trust_for, upgrade
from .._errors import BadInput, DuplicateHandle, UnknownGrant
from ._home import Home, check_handle, write_private
from ._models import Account

if TYPE_CHECKING:  # the registry takes only the request's digest; the request lives above it
    from .._request import GenerationRequest

_ENGINES: dict[str, Engine] = {}


def engine_for(home: Home, *, check: bool = True) -> Engine:
    """The home's engine, carrying the home's root of trust (its binding key and the KEK-derived
    state and audit keys): every transaction opened on it verifies rows against those keys."""
    eng = _ENGINES.get(home.db_url)
    if eng is None:
        eng = _ENGINES[home.db_url] = make_engine(home.db_url)
    if check:
        home.require()
        require_schema(eng)
    if trust_for(eng) is None or trust_for(eng).binding_key != _binding_public(home):
        bind_trust(eng, home.trust())
    return eng


def _binding_public(home: Home) -> Any:
    try:
        return SigningKey.from_pem(home.binding_key_path.read_bytes()).public
    except (OSError, ValueError):
        return None


def init(home: Home, *, now: datetime) -> dict[str, Any]:
    """Create the home (0700), the vault key, the token key and the schema. Safe to run again."""
    created = []
    home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home.path, 0o700)
    if not home.kek_path.exists() and not os.environ.get("CAMEO_KEK"):
        from ._vault import LocalKek

        LocalKek.generate(home.kek_path)
        created.append("vault key")
    if not home.token_key_path.exists():
        write_private(home.token_key_path, SigningKey.generate().to_pem(None))
        created.append("token key")
    if not home.binding_key_path.exists():
        write_private(home.binding_key_path, SigningKey.generate().to_pem(None))
        created.append("binding key")
    if not home.log_key_path.exists():
        write_private(home.log_key_path, SigningKey.generate().to_pem(None))
        created.append("log key")
    home.vault()  # the vault key is readable and well formed
    key = home.token_signing_key()
    binding = home.trust().binding_key
    eng = engine_for(home, check=False)
    upgrade(eng)  # a new SQLite file is created 0600 (make_engine); an older one is narrowed here
    restrict_sqlite_file(home.db_url)
    with transaction(eng) as s:
        rid = reg.initialise(s, token_key=key.public, binding_key=binding, now=now)
    return {"home": str(home.path), "database": _redact(home.db_url), "registry_id": rid, "created": created}


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as nothing
        return "(unparseable URL)"


def account_create(home: Home, handle: str, passphrase: str, *, now: datetime) -> dict[str, Any]:
    check_handle(handle)
    if len(passphrase) < 8:
        raise BadInput("the passphrase must have at least 8 characters")
    eng = engine_for(home)
    home.require()
    with transaction(eng) as s:
        if s.execute(select(Account.id).where(Account.handle == handle)).first() is not None:
            raise DuplicateHandle(f"the handle {handle!r} is taken")
    key = SigningKey.generate()
    path = home.key_path(handle)
    if path.exists():
        raise DuplicateHandle(f"a key for {handle!r} is already in this keystore")
    home.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=home.keys_dir, prefix=".new-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.to_pem(passphrase.encode()))
        with transaction(eng) as s:
            acc = reg.create_account(s, handle, key.public, now=now)
            os.link(tmp, path)  # fails if a key appeared meanwhile: the transaction rolls back
    finally:
        os.unlink(tmp)
    return {"handle": handle, "account_id": acc.id, "key_id": key.key_id}


def follow(home: Home, follower: str, followee: str, *, passphrase: str, now: datetime) -> dict[str, Any]:
    """FOLLOWER signs a follow of FOLLOWEE with their own key (mutuals rest on these signatures)."""
    from consent import Follow

    with transaction(engine_for(home)) as s:
        a = reg.get_account(s, follower)
        reg.get_account(s, followee)
        key = home.load_key(follower, passphrase)
        if follower == followee:
            raise BadInput("nobody follows themselves")
        doc = Follow.create(key, id=new_id("follow"), follower=follower, follower_key=a.key_id, followee=followee,
                            created=now)
        reg.follow(s, doc.to_bytes(), now=now)
    return {"follower": follower, "followee": followee, "digest": doc.digest}


#: A grant's modalities when --modality is not given and the owner has no cameo yet.
DEFAULT_GRANT_MODALITIES = ("face", "voice")


def _enrolled_modalities(s: Any, owner: Account) -> tuple[str, ...] | None:
    """The modalities of the owner's active cameo (from the signed consent record), or None."""
    from consent import MODALITIES

    cameo, record = reg.live_consent(s, owner)
    if cameo is None or record is None or cameo.status != "active":
        return None
    return tuple(m for m in MODALITIES if m in record.modalities)


def grant_modalities(owner: str, asked: tuple[str, ...] | None, enrolled: tuple[str, ...] | None) -> tuple[str, ...]:
    """A grant's modalities: what was asked, or what the owner's cameo has (face,voice before
    enrollment); asking for one the cameo lacks is bad input (such a grant could never be used)."""
    if asked is None:
        return enrolled or DEFAULT_GRANT_MODALITIES
    if enrolled is not None and (missing := [m for m in asked if m not in enrolled]):
        raise BadInput(f"{owner}'s cameo has no {' or '.join(missing)} template (it has {', '.join(enrolled)}): "
                       f"a grant for {', '.join(missing)} could never be used; give --modality "
                       f"{','.join(enrolled)} or leave --modality out")
    return asked


def grant(home: Home, owner: str, grantee: str, *, passphrase: str, modalities: tuple[str, ...] | None = None,
          purposes: tuple[str, ...], generators: tuple[str, ...], uses: int, expires: str,
          now: datetime) -> dict[str, Any]:
    """OWNER signs a grant. Without ``modalities`` it covers what the owner's cameo has (face,voice
    before enrollment); a modality the cameo lacks is bad input: such a grant could never be used."""
    from consent import MalformedDocument

    if not 1 <= uses <= 1_000_000:
        raise BadInput("--uses must be between 1 and 1000000")
    ttl = reg.parse_duration(expires)
    eng = engine_for(home)
    with transaction(eng) as s:
        o, g = reg.get_account(s, owner), reg.get_account(s, grantee)
        modalities = grant_modalities(owner, modalities, _enrolled_modalities(s, o))
        key = home.load_key(owner, passphrase)
        try:
            doc = Grant.create(key, id=new_id("grant"), owner=owner, owner_key=o.key_id, grantee=grantee,
                               grantee_key=g.key_id, modalities=modalities, purposes=purposes, generators=generators,
                               created=now, not_after=now + ttl, max_uses=uses)
        except MalformedDocument as e:
            raise BadInput(str(e)) from e
        reg.submit_grant(s, doc.to_bytes(), now=now)
    return {"grant_id": doc.id, "owner": owner, "grantee": grantee, "modalities": list(modalities),
            "purposes": list(purposes), "generators": list(generators), "max_uses": uses,
            "not_after": fmt_time(doc.not_after), "digest": doc.digest}


def grants(home: Home, owner: str, *, now: datetime | None = None) -> dict[str, Any]:
    """OWNER's grants with their terms read from the owner-signed documents (modalities, purposes,
    generators, use limit, expiry) and their state: active, revoked, expired, used up, or tampered
    (a row or envelope that does not verify)."""
    from consent import ConsentError

    from ._models import GrantRow

    with transaction(engine_for(home)) as s:
        o = reg.get_account(s, owner)
        out = reg.grants_of(s, o)
        try:
            owner_key = reg.account_key(s, o)
        except Exception:  # noqa: BLE001 - an unbound owner key: every grant shows as tampered
            owner_key = None
        for g in out:
            row = s.get(GrantRow, g["id"])
            doc = None
            if owner_key is not None and row is not None:
                try:
                    doc = Grant.from_bytes(row.envelope, owner_key)
                except (ConsentError, ValueError):
                    doc = None
            ok = doc is not None and doc.id == g["id"] and row is not None and reg.grant_row_ok(s, row)
            if doc is not None:
                g.update(modalities=list(doc.modalities), purposes=list(doc.purposes),
                         generators=list(doc.generators), max_uses=doc.max_uses, not_after=fmt_time(doc.not_after))
            else:
                g.update(modalities=[], purposes=[])
            g["uses_left"] = max(0, g["max_uses"] - g["uses"])
            if not ok:
                g["state"] = "tampered"
            elif g["revoked_at"]:
                g["state"] = "revoked"
            elif now is not None and doc is not None and doc.not_after <= now:
                g["state"] = "expired"
            elif g["uses_left"] == 0:
                g["state"] = "used up"
            else:
                g["state"] = "active"
        return {"owner": owner, "grants": out}


def revoke(home: Home, owner: str, *, passphrase: str, grant_id: str | None, everything: bool,
           now: datetime) -> dict[str, Any]:
    if bool(grant_id) == bool(everything):
        raise BadInput("give exactly one of --grant ID or --all")
    with transaction(engine_for(home)) as s:
        o = reg.get_account(s, owner)
        if grant_id:
            from ._models import GrantRow

            row = s.get(GrantRow, grant_id)
            if row is None or row.owner_id != o.id:
                raise UnknownGrant(f"{owner} has no grant {grant_id[:64]!r}")
        key = home.load_key(owner, passphrase)
        doc = Revocation.create(key, id=new_id("rev"), owner=owner, owner_key=o.key_id,
                                scope="grant" if grant_id else "consent", target=grant_id or "*", created=now)
        return reg.submit_revocation(s, doc.to_bytes(), now=now)


def token(home: Home, owner: str, grantee: str, *, passphrase: str, generator: str, request: GenerationRequest,
          purpose: str, grant_id: str | None, ttl: str | None, now: datetime) -> dict[str, Any]:
    life = reg.parse_duration(ttl, max_days=1) if ttl else reg.DEFAULT_TOKEN_TTL
    with transaction(engine_for(home)) as s:
        g = reg.get_account(s, grantee)
        o = reg.get_account(s, owner)
        key = home.load_key(grantee, passphrase)
        if grant_id is not None:  # a grant that is not owner -> grantee is not found (4), not a denial (3)
            from ._models import GrantRow

            row = s.get(GrantRow, grant_id)
            if row is None or row.owner_id != o.id or row.grantee_id != g.id:
                raise UnknownGrant(f"no grant {grant_id[:64]!r} from {owner} to {grantee}")
        req = TokenRequest.create(key, id=new_id("treq"), grantee=grantee, grantee_key=g.key_id, owner=owner,
                                  grant_id=grant_id, generator=generator, purpose=purpose,
                                  request_digest=request.digest, created=now)
        minted = reg.mint(s, req.to_bytes(), home.keyring(), now=now, ttl=life)
    if minted.denied is not None:
        from .._errors import MintDenied

        raise MintDenied(minted.denied.reasons)
    assert minted.claims is not None
    return {"token": minted.token, "token_id": minted.claims.jti, "grant_id": minted.claims.grant_id,
            "generator": generator, "expires": fmt_time(minted.claims.expires),
            "request_digest": request.digest}


def usage(home: Home, handle: str, *, proofs: bool = False) -> dict[str, Any]:
    """Every audit entry about HANDLE, oldest first. Each entry keeps its raw fields (``entry_id``
    names it in the transparency log) and gains readable ones: ``actor_handle``, and where they
    apply ``grantee`` (a handle), ``generator``, ``grant_id``, ``token_id`` and ``outputs`` (digests
    of what a use produced). With ``proofs``, each integrated entry also carries its ``proof``
    (inclusion in the latest signed checkpoint, :func:`cameo.registry._log.inclusion_proof`;
    ``None`` while pending), and the result the ``checkpoint``."""
    from ._models import GrantRow, TokenUse

    with transaction(engine_for(home)) as s:
        acc = reg.get_account(s, handle)
        entries = audit.entries_for(s, acc.id)
        handles = dict(s.execute(select(Account.id, Account.handle)).all())
        grantee_of = {gid: handles.get(aid, aid) for gid, aid in s.execute(
            select(GrantRow.id, GrantRow.grantee_id).where(GrantRow.owner_id == acc.id)).all()}
        grant_of_token = dict(s.execute(select(TokenUse.jti, TokenUse.grant_id)
                                        .join(GrantRow, GrantRow.id == TokenUse.grant_id)
                                        .where(GrantRow.owner_id == acc.id)).all())
        checkpoint = None
        if proofs:
            from ._log import LogError, inclusion_proof, latest_checkpoint

            try:
                checkpoint = latest_checkpoint(s)
            except LogError:
                checkpoint = None
            for e in entries:
                e["proof"] = None
                if checkpoint is not None and e["leaf_index"] is not None and e["leaf_index"] < checkpoint["tree_size"]:
                    p = inclusion_proof(s, e["entry_id"], checkpoint["tree_size"])
                    e["proof"] = {k: p[k] for k in ("leaf_index", "tree_size", "leaf_hash", "hashes", "entry_bytes")}
    outputs_of: dict[str, list[str]] = {}  # token id -> digests of the outputs of its use
    for e in entries:
        d = e["detail"]
        tok, gid = _token_id(d), d.get("grant") or d.get("grant_id")
        if tok and isinstance(gid, str):
            grant_of_token.setdefault(tok, gid)
        if tok and isinstance(d.get("outputs"), list):
            outputs_of.setdefault(tok, []).extend(x for x in d["outputs"] if isinstance(x, str))
    for e in entries:
        d = e["detail"]
        tok = _token_id(d)
        gid = d.get("grant_id") or d.get("grant") or (grant_of_token.get(tok) if tok else None)
        grantee = d.get("grantee") if isinstance(d.get("grantee"), str) else None
        e["actor_handle"] = handles.get(e["actor"]) if e["actor"] else None
        e["grantee"] = handles.get(grantee, grantee) if grantee else (grantee_of.get(gid) if gid else None)
        gens = d.get("generators")
        e["generator"] = d.get("generator") or (",".join(map(str, gens)) if isinstance(gens, list) else None)
        e["grant_id"], e["token_id"] = gid, tok
        # a use's outputs go with its release and its output entry, never with a denied attempt
        # that presented the same token again
        released = "release" in e["event"] and not e["event"].endswith((":denied", ":withheld"))
        e["outputs"] = outputs_of.get(tok, []) if tok and (released or "outputs" in d) else []
    denied = sum(1 for e in entries if e["event"].endswith((":denied", ":withheld")))
    out = {"handle": handle, "entries": entries, "count": len(entries), "denied": denied}
    if proofs:
        out["checkpoint"] = checkpoint
    return out


def _token_id(detail: dict[str, Any]) -> str | None:
    tok = detail.get("token_id") or detail.get("token")
    return tok if isinstance(tok, str) and tok.startswith("tok_") else None


def _log_keys(home: Home, s: Any) -> Any:
    from ._log import log_keys, log_origin

    return log_keys(home, log_origin(s))


def audit_verify(home: Home) -> audit.ChainReport:
    """Every entry's MAC, and the transparency log: leaves, tree, and every stored checkpoint
    signed by a log key on file (active or retired) and consistent with the latest."""
    with transaction(engine_for(home)) as s:
        return audit.verify_chain(s, _log_keys(home, s).verifiers)


def audit_integrate(home: Home) -> dict[str, Any]:
    """Integrate the pending entries now, as the one integrator (``cameo serve`` runs one itself)."""
    from ._log import Integrator

    return Integrator.for_home(home).run_once(sign_empty=True).as_dict()


def audit_checkpoint(home: Home, *, integrate: bool = True) -> dict[str, Any]:
    """The latest signed checkpoint. Integrates whatever is pending first, unless another
    integrator (a running server) holds the log: then its latest checkpoint is shown."""
    from ._log import latest_checkpoint

    if integrate:
        audit_integrate(home)
    with transaction(engine_for(home)) as s:
        return latest_checkpoint(s)


def audit_prove(home: Home, entry_id: str, *, tree_size: int | None = None) -> dict[str, Any]:
    from ._log import inclusion_proof

    with transaction(engine_for(home)) as s:
        return inclusion_proof(s, entry_id, tree_size)


def audit_consistency(home: Home, first: int, second: int) -> dict[str, Any]:
    from ._log import consistency_proof

    with transaction(engine_for(home)) as s:
        return consistency_proof(s, first, second)
