"""Shared fixtures. Test media are read at run time from CAMEO_TEST_DATA (default: ../shared/data
beside the project); tests that need them skip with a clear reason when they are absent.

Databases are real: SQLite files under ``tmp_path`` and a throwaway PostgreSQL database created for
the session (``CAMEO_TEST_PG_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
and dropped at its end. Without a reachable server the PostgreSQL cases skip, except under CI
(``CI`` set), where they fail: CI must never silently skip them.

Time is an argument: every registry call here passes ``NOW`` (or a time derived from it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CAMEO_TEST_DATA", ROOT.parent / "shared" / "data"))

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PASSPHRASE = "correct horse battery"
PG_URL = os.environ.get("CAMEO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GENERATOR = "studio-v1"  # registered by `cameo init`


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "faces").is_dir():
        pytest.skip(f"test media not found at {DATA} (set CAMEO_TEST_DATA to the data root)")
    return DATA


# -- databases --------------------------------------------------------------------------------------
def forget_engine(url: str) -> None:
    """Dispose of the engine ``cameo.registry._app`` cached for ``url`` (so files and databases can go)."""
    from cameo.registry import _app
    eng = _app._ENGINES.pop(url, None)
    if eng is not None:
        eng.dispose()


def _pg_unavailable(reason: str) -> None:
    from sqlalchemy.engine import make_url

    shown = make_url(PG_URL).render_as_string(hide_password=True)
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI but {shown} is not usable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not reachable at {shown} ({reason}); set CAMEO_TEST_PG_URL to test it")


@contextlib.contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """CREATE DATABASE cameo_t_<random>; yield its URL; DROP it (forcing off stray connections)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    base = make_url(PG_URL)
    name = f"cameo_t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (SQLAlchemyError, ImportError) as e:
        admin.dispose()
        _pg_unavailable(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        forget_engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, migrated to head."""
    from cameo.registry._db import make_engine, upgrade

    with throwaway_pg_database() as url:
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
        yield url


def _empty_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    from cameo.registry._models import Base

    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            for t in reversed(Base.metadata.sorted_tables):
                conn.execute(t.delete())
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The registry database: a SQLite file in tmp_path, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cameo.db'}"
        yield url
        forget_engine(url)
    else:
        url = request.getfixturevalue("pg_url")
        _empty_pg(url)
        yield url


# -- a ready registry -------------------------------------------------------------------------------
@dataclass
class Registry:
    """A registry initialised by ``cameo.registry._app.init`` with accounts alice, bob and carol."""

    home: Any
    engine: Any
    now: datetime
    keys: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.home.db_url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Any:
        from cameo.registry._db import transaction

        return transaction(self.engine)

    def keyring(self) -> Any:
        """The registry's signing keyring (the active token key plus every token key on file)."""
        return self.home.keyring()

    def gate(self, *, vault: bool = False, **kw: Any) -> Any:
        from conditioning._gate import Gate

        kw.setdefault("screener", self.screener())
        return Gate(self.engine, self.home.verify_keyring(), self.home.vault() if vault else None, **kw)

    def screener(self) -> Any:
        """The real likeness screener (its models load only when a request carries media)."""
        from cameo._likeness import Encoders
        from conditioning._generate import authority_for
        from conditioning._screen import Screener

        return Screener(self.engine, self.home.vault(), Encoders(), authority_for(self.home))

    def account(self, handle: str) -> None:
        from cameo.registry import _app
        _app.account_create(self.home, handle, PASSPHRASE, now=self.now)
        self.keys[handle] = self.home.load_key(handle, PASSPHRASE)
        with self.session() as s:
            from cameo.registry._services import get_account

            self.ids[handle] = get_account(s, handle).id

    @staticmethod
    def request(prompt: str = "alice waves from a boat", params: dict[str, Any] | None = None) -> Any:
        from cameo._request import GenerationRequest

        return GenerationRequest.build(prompt, {"seconds": 4} if params is None else params)

    # -- documents -----------------------------------------------------------------------------
    def make_grant(self, owner: str = "alice", grantee: str = "bob", *, key: Any = None,
                   created: datetime | None = None, ttl: timedelta = timedelta(days=7),
                   generators: tuple[str, ...] = (GENERATOR,), modalities: tuple[str, ...] = ("face", "voice"),
                   purposes: tuple[str, ...] = ("generate",), max_uses: int = 3, **over: Any) -> Any:
        from consent import Grant, new_id

        created = self.now if created is None else created
        fields: dict[str, Any] = {
            "id": new_id("grant"), "owner": owner, "owner_key": self.keys[owner].key_id, "grantee": grantee,
            "grantee_key": self.keys[grantee].key_id if grantee in self.keys else "ed25519:" + "0" * 32,
            "modalities": modalities, "purposes": purposes, "generators": generators, "created": created,
            "not_after": created + ttl, "max_uses": max_uses}
        fields.update(over)
        return Grant.create(key or self.keys[owner], **fields)

    def grant(self, owner: str = "alice", grantee: str = "bob", *, now: datetime | None = None, **kw: Any) -> Any:
        from cameo.registry import _services as reg
        doc = self.make_grant(owner, grantee, **kw)
        with self.session() as s:
            reg.submit_grant(s, doc.to_bytes(), now=now or self.now)
        return doc

    def token_request(self, owner: str = "alice", grantee: str = "bob", request: Any = None, *,
                      generator: str = GENERATOR, purpose: str = "generate", grant_id: str | None = None,
                      created: datetime | None = None, key: Any = None, **over: Any) -> bytes:
        from consent import TokenRequest, new_id

        request = request or self.request()
        fields: dict[str, Any] = {
            "id": new_id("treq"), "grantee": grantee, "grantee_key": self.keys[grantee].key_id if grantee in self.keys
            else "ed25519:" + "0" * 32, "owner": owner, "grant_id": grant_id, "generator": generator, "purpose": purpose,
            "request_digest": request.digest, "created": self.now if created is None else created}
        fields.update(over)
        return TokenRequest.create(key or self.keys[grantee], **fields).to_bytes()

    def mint(self, owner: str = "alice", grantee: str = "bob", request: Any = None, *, now: datetime | None = None,
             ttl: timedelta = timedelta(minutes=5), data: bytes | None = None, **kw: Any) -> Any:
        """Mint through ``cameo.registry._services.mint`` in one committed transaction; returns ``Minted``."""
        from cameo.registry import _services as reg
        now = self.now if now is None else now
        data = data or self.token_request(owner, grantee, request, created=now, **kw)
        keyring = self.keyring()
        with self.session() as s:
            return reg.mint(s, data, keyring, now=now, ttl=ttl)

    def token(self, owner: str = "alice", grantee: str = "bob", request: Any = None, **kw: Any) -> str:
        minted = self.mint(owner, grantee, request, **kw)
        assert minted.denied is None, minted.denied
        return str(minted.token)

    def make_revocation(self, owner: str = "alice", grant_id: str | None = None, *, key: Any = None,
                        now: datetime | None = None, **over: Any) -> bytes:
        from consent import Revocation, new_id

        fields: dict[str, Any] = {"id": new_id("rev"), "owner": owner, "owner_key": self.keys[owner].key_id,
                                      "scope": "grant" if grant_id else "consent", "target": grant_id or "*",
                                      "created": self.now if now is None else now}
        fields.update(over)
        return Revocation.create(key or self.keys[owner], **fields).to_bytes()

    def revoke(self, owner: str = "alice", grant_id: str | None = None, *, now: datetime | None = None) -> Any:
        from cameo.registry import _services as reg
        data = self.make_revocation(owner, grant_id, now=now)
        with self.session() as s:
            return reg.submit_revocation(s, data, now=self.now if now is None else now)

    def enroll(self, owner: str, templates: dict[str, Any], *, encoder: str = "test-encoder-v1",
               audience: str = "approved", expires: datetime | None = None,
               restrictions: tuple[str, ...] = ("no political content",)) -> str:
        """Enroll ``owner`` as enrollment does after the encoders: the owner signs a consent record
        committing to the templates, and ``cameo.registry._cameos.seal_cameo`` seals them. Returns the cameo id."""
        from cameo.registry._cameos import TemplateInput, seal_cameo
        from cameo.registry._services import get_account
        from consent import ConsentRecord, new_id

        inputs = [TemplateInput(m, encoder, v, samples=3) for m, v in templates.items()]
        record = ConsentRecord.create(
            self.keys[owner], id=new_id("consent"), owner=owner, owner_key=self.keys[owner].key_id,
            purposes=("generate", "remix"), modalities=tuple(templates), audience=audience,
            restrictions=restrictions, templates=tuple(t.commitment() for t in inputs), adult_attested=True,
            created=self.now, expires=expires)
        with self.session() as s:
            cameo = seal_cameo(s, self.home.vault(), owner=get_account(s, owner), consent_bytes=record.to_bytes(),
                               templates=inputs, now=self.now)
            return str(cameo.id)

    # -- inspection ----------------------------------------------------------------------------
    def usage(self, handle: str) -> dict[str, Any]:
        from cameo.registry import _app
        return _app.usage(self.home, handle)

    def denials(self, handle: str, event: str) -> list[set[str]]:
        """Reason codes of each ``<event>:denied`` entry in ``handle``'s usage log."""
        return [{r["code"] for r in e["detail"].get("reasons", [])}
                for e in self.usage(handle)["entries"] if e["event"] == f"{event}:denied"]

    def grant_row(self, grant_id: str) -> Any:
        from cameo.registry._models import GrantRow

        with self.session() as s:
            return s.get(GrantRow, grant_id)

    def count(self, table: str) -> int:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return dump_tables(self.engine)

    def verify_chain(self) -> Any:
        from cameo.registry import _audit
        with self.session() as s:
            return _audit.verify_chain(s)


def dump_tables(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal dumps mean nothing changed."""
    from sqlalchemy import select

    from cameo.registry._models import Base

    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for t in Base.metadata.sorted_tables:
            rows = conn.execute(select(t).order_by(*t.primary_key.columns)).all()
            out[t.name] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return out


def dir_listing(path: Path) -> dict[str, str]:
    """Every file under ``path`` with a digest of its bytes and its mode."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] + f" {p.stat().st_mode:o}"
            for p in sorted(path.rglob("*")) if p.is_file()}


HANDLES = ("alice", "bob", "carol")


@pytest.fixture(scope="session")
def _registry_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per backend, a registry built once (``cameo init`` and the three accounts); each test gets a
    copy of its home and its rows, so no test pays for key generation and migrations."""
    return {}


def _template(cache: dict[str, Any], factory: pytest.TempPathFactory, backend: str, url: str) -> dict[str, Any]:
    from cameo.registry import _app
    from cameo.registry._home import Home
    from conditioning._app import init as conditioning_init

    if backend not in cache:
        path = factory.mktemp(f"template-{backend}")
        url = f"sqlite:///{path / 'cameo.db'}" if backend == "sqlite" else url
        home = Home.resolve(path, url)
        conditioning_init(home, now=NOW)
        r = Registry(home=home, engine=_app.engine_for(home), now=NOW)
        for h in HANDLES:
            r.account(h)
        cache[backend] = {"path": path, "ids": dict(r.ids), "rows": r.dump()}
        forget_engine(url)  # SQLite: the last connection checkpoints the WAL into the file
    return cache[backend]


def _restore_rows(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    from sqlalchemy import create_engine, insert

    from cameo.registry._models import Base

    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            for t in Base.metadata.sorted_tables:
                if rows[t.name]:
                    conn.execute(insert(t), [dict(zip(t.columns.keys(), r)) for r in rows[t.name]])
    finally:
        eng.dispose()


@pytest.fixture
def make_registry(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch,
                  _registry_templates: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Builds a :class:`Registry` in ``tmp_path`` on the parametrised database: a copy of the
    session's template registry (alice, bob, carol), plus any further handles asked for."""
    import shutil

    from cameo.registry import _app
    from cameo.registry._home import Home

    for var in ("CAMEO_KEK", "CAMEO_TOKEN_KEY", "CAMEO_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAMEO_HOME", str(tmp_path))
    monkeypatch.setenv("CAMEO_DATABASE_URL", db_url)
    monkeypatch.setenv("CAMEO_PASSPHRASE", PASSPHRASE)
    backend = "sqlite" if db_url.startswith("sqlite") else "postgres"

    def build(handles: tuple[str, ...] = HANDLES, now: datetime = NOW) -> Registry:
        fresh = backend not in _registry_templates
        tpl = _template(_registry_templates, tmp_path_factory, backend, db_url)
        shutil.copytree(tpl["path"], tmp_path, dirs_exist_ok=True)  # keeps modes (0600 keys)
        if backend == "postgres" and not fresh:  # (a fresh template was built in this very database)
            _restore_rows(db_url, tpl["rows"])
        home = Home.resolve(tmp_path, db_url)
        r = Registry(home=home, engine=_app.engine_for(home), now=now)
        for h in HANDLES:
            r.keys[h] = home.load_key(h, PASSPHRASE)
        r.ids.update(tpl["ids"])
        for h in handles:
            if h not in r.keys:
                r.account(h)
        return r

    return build


@pytest.fixture
def registry(make_registry: Any) -> Registry:
    """A ready registry (alice, bob, carol) on SQLite and on PostgreSQL."""
    return make_registry()
