"""The API (``/v1``): parse, authenticate, call the library, present. FastAPI, because its
pydantic models give the OpenAPI document (and schemathesis its schema) from the same code that
validates the input, and its sync handlers run in a thread pool over our blocking library.

Parties and what they sign (see :mod:`service._auth`):

* owner-signed documents (grant, revocation, follow, token request) are their own proof;
* everything else is an RFC 9421-signed request: an owner for their cameo (enroll, show, usage,
  grants, delete, match against their own cameo), a generator for its releases.

Every error is an RFC 9457 problem document with the CLI's reason codes and exit code.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._auth import Party, RateLimiter, authenticate
from ._problems import PROBLEM, Problem, from_error, problem

API_VERSION = "v1"
MAX_BODY = 48 << 20  # bytes: enough for two photos, two clips or one short video, base64-encoded
MAX_FILE = 24 << 20
MODEL_SLOTS = 2  # concurrent model calls (embedding, screening) per worker
MODEL_WAIT_S = 60.0

_B64 = r"^[A-Za-z0-9+/=\s]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileIn(_Strict):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00-\x1f]+$")
    data: str = Field(description="the file's bytes, base64", max_length=MAX_FILE * 4 // 3 + 4, pattern=_B64)


class AccountIn(_Strict):
    handle: str = Field(min_length=2, max_length=32)
    public_key: str = Field(description="raw Ed25519 public key, base64", max_length=64, pattern=_B64)


class DocumentIn(_Strict):
    document: str = Field(description="a signed cameo document (its envelope bytes), base64",
                          max_length=1 << 20, pattern=_B64)


class TokenIn(DocumentIn):
    ttl: str | None = Field(default=None, max_length=16, description="token lifetime, e.g. 5m (at most 1d)")


class EnrollIn(_Strict):
    faces: list[FileIn] = Field(default_factory=list, max_length=16)
    voices: list[FileIn] = Field(default_factory=list, max_length=16)
    video: FileIn | None = None


class ConsentIn(_Strict):
    consent: str = Field(description="the owner-signed consent record, base64", max_length=1 << 20, pattern=_B64)


class RequestIn(_Strict):
    prompt: str = Field(max_length=10_000)
    params: dict[str, Any] = Field(default_factory=dict)
    references: list[FileIn] = Field(default_factory=list, max_length=16)


class ReleaseIn(_Strict):
    request: RequestIn
    tokens: list[str] = Field(min_length=1, max_length=16)


class OutputsIn(_Strict):
    outputs: list[FileIn] = Field(min_length=1, max_length=16)


class MatchIn(_Strict):
    file: FileIn


def _b64(text: str, what: str) -> bytes:
    from cameo import BadInput

    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{what} is not valid base64") from None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BodyLimit:
    """Refuse a body over ``limit`` bytes with 413 before reading it (Content-Length) or as soon as
    it grows past the limit (chunked): nothing is parsed, nothing is stored."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0 or n > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problem(413, f"the body is larger than {self.limit} bytes", code="body-too-large",
                       headers={"Connection": "close"})
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


class _Context:
    """What one worker keeps: the registry's home, the encoders (models load once), the limits."""

    def __init__(self, home: Any, *, model_slots: int = MODEL_SLOTS) -> None:
        from cameo import Encoders

        self.home = home
        self.encoders = Encoders(None)
        self.models = threading.BoundedSemaphore(model_slots)
        self.signed_limit = RateLimiter(rate=20.0, burst=60)
        self.open_limit = RateLimiter(rate=50.0, burst=200)

    @contextmanager
    def model_slot(self) -> Iterator[None]:
        if not self.models.acquire(timeout=MODEL_WAIT_S):
            raise Problem(503, "the server is busy with model work; retry shortly", code="busy",
                          headers={"Retry-After": "5"})
        try:
            yield
        finally:
            self.models.release()

    @contextmanager
    def staged(self, files: list[tuple[str, FileIn]]) -> Iterator[dict[str, list[Path]]]:
        """Write uploaded files into a fresh 0700 staging folder (removed afterwards)."""
        from conditioning._generate import new_staging

        folder = new_staging(self.home)
        out: dict[str, list[Path]] = {}
        try:
            for i, (group, f) in enumerate(files):
                data = _b64(f.data, f"file {f.name[:64]!r}")
                if len(data) > MAX_FILE:
                    raise Problem(413, f"{f.name[:64]} is larger than {MAX_FILE} bytes", code="file-too-large")
                sub = folder / str(i)
                sub.mkdir(mode=0o700)
                p = sub / Path(f.name).name
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                out.setdefault(group, []).append(p)
            yield out
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def create_app(home: Any = None) -> FastAPI:
    """The application over ``home`` (default: CAMEO_HOME / CAMEO_DATABASE_URL of the process)."""
    from cameo.registry import Home

    home = home or Home.resolve()
    home.require()
    ctx = _Context(home)
    app = FastAPI(title="cameo registry", version=API_VERSION,
                  description="Consent-gated likeness registry. Writes are signed by the acting party's own "
                              "Ed25519 key (RFC 9421 HTTP Message Signatures); errors are RFC 9457 problem details.")
    _errors(app)

    async def raw_body(request: Request) -> bytes:
        return await request.body()

    def signer(request: Request, raw: bytes = Depends(raw_body)) -> Party:
        return authenticate(home, method=request.method, path=request.scope["raw_path"].decode("latin-1"),
                            query=request.scope.get("query_string", b"").decode("latin-1"), body=raw,
                            headers={k.lower(): v for k, v in request.headers.items()}, limiter=ctx.signed_limit)

    def unsigned(request: Request) -> None:
        ctx.open_limit.take("addr:" + (request.client.host if request.client else "?"))

    def owner(handle: str, party: Party, power: str | None = None) -> None:
        if party.kind == "device":  # a delegated device key: only the narrowing powers (service/_web.py)
            from ._web import device_may

            device_may(home, party, handle, power)
            return
        if party.kind != "account" or party.name != handle:
            raise Problem(403, f"only {handle[:32]} may do this with their cameo (signed by {party.keyid[:80]})",
                          code="wrong-party")

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        return {"ok": True, "version": API_VERSION}

    @app.get("/v1/trust", tags=["meta"], dependencies=[Depends(unsigned)])
    def trust() -> dict[str, Any]:
        """The registry's public trust root: C2PA trust anchor, token verification keys. Pin it."""
        from conditioning._generate import authority_for

        anchors = authority_for(home).trust_anchors.decode("ascii")
        return {"c2pa_trust_anchors": anchors, "token_key": home.token_signing_key().public.b64()}

    # -- accounts ------------------------------------------------------------------------------
    @app.get("/v1/accounts/{handle}", tags=["accounts"], dependencies=[Depends(unsigned)])
    def account_get(handle: str) -> dict[str, Any]:
        from cameo.registry._served import account_public

        return account_public(home, handle[:64])

    @app.post("/v1/accounts", tags=["accounts"], status_code=201)
    def account_post(body: AccountIn, request: Request, raw: bytes = Depends(raw_body)) -> dict[str, Any]:
        """Create an account for a key made on the party's machine; signed by that key (proof of possession)."""
        from cameo.registry._served import account_create

        key = _b64(body.public_key, "public_key")
        party = authenticate(home, method=request.method, path=request.scope["raw_path"].decode("latin-1"),
                             query=request.scope.get("query_string", b"").decode("latin-1"), body=raw,
                             headers={k.lower(): v for k, v in request.headers.items()}, limiter=ctx.signed_limit,
                             new_account_key=key)
        if party.kind != "account" or party.name != body.handle:
            raise Problem(403, "an account is created by a request signed as account:<its handle>", code="wrong-party")
        return account_create(home, body.handle, key, now=_now())

    # -- owner-signed documents: their own proof -------------------------------------------------
    @app.post("/v1/follows", tags=["consent"], status_code=201, dependencies=[Depends(unsigned)])
    def follow_post(body: DocumentIn) -> dict[str, Any]:
        from cameo.registry._served import follow

        return follow(home, _b64(body.document, "document"), now=_now())

    @app.post("/v1/grants", tags=["consent"], status_code=201, dependencies=[Depends(unsigned)])
    def grant_post(body: DocumentIn) -> dict[str, Any]:
        from cameo.registry._served import grant

        return grant(home, _b64(body.document, "document"), now=_now())

    @app.post("/v1/revocations", tags=["consent"], status_code=201, dependencies=[Depends(unsigned)])
    def revocation_post(body: DocumentIn) -> dict[str, Any]:
        from cameo.registry._served import revoke

        return revoke(home, _b64(body.document, "document"), now=_now())

    @app.post("/v1/tokens", tags=["consent"], status_code=201, dependencies=[Depends(unsigned)])
    def token_post(body: TokenIn) -> dict[str, Any]:
        from cameo.registry import _services as reg
        from cameo.registry._served import token

        ttl = reg.parse_duration(body.ttl, max_days=1) if body.ttl else reg.DEFAULT_TOKEN_TTL
        return token(home, _b64(body.document, "document"), ttl=ttl, now=_now())

    # -- the owner's cameo -------------------------------------------------------------------------
    @app.get("/v1/cameos/{handle}", tags=["cameos"])
    def cameo_get(handle: str, party: Party = Depends(signer)) -> dict[str, Any]:
        from cameo._enrollment import show

        owner(handle, party, "read")
        return show(home, handle)

    @app.get("/v1/cameos/{handle}/usage", tags=["cameos"])
    def usage_get(handle: str, party: Party = Depends(signer)) -> dict[str, Any]:
        from cameo.registry._app import usage

        owner(handle, party, "read")
        return usage(home, handle)

    @app.get("/v1/cameos/{handle}/grants", tags=["cameos"])
    def grants_get(handle: str, party: Party = Depends(signer)) -> dict[str, Any]:
        from cameo.registry._app import grants

        owner(handle, party, "read")
        return grants(home, handle, now=_now())

    @app.delete("/v1/cameos/{handle}", tags=["cameos"])
    def cameo_delete(handle: str, party: Party = Depends(signer)) -> dict[str, Any]:
        """Withdraw consent and crypto-shred the cameo (its data key is destroyed)."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._cameos import delete_cameo

        owner(handle, party, "delete")
        with transaction(engine_for(home)) as s:
            return delete_cameo(s, handle, now=_now())

    @app.post("/v1/cameos/{handle}/enrollments", tags=["cameos"], status_code=201)
    def enroll_post(handle: str, body: EnrollIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Step 1: upload media; the server embeds, checks liveness and duplicates, and returns the
        template commitments the owner's consent record must name (valid 15 minutes)."""
        from cameo._enrollment import enroll_begin

        owner(handle, party)
        files = [("face", f) for f in body.faces] + [("voice", f) for f in body.voices]
        files += [("video", body.video)] if body.video else []
        with ctx.staged(files) as got, ctx.model_slot():
            video = got.get("video", [None])[0]
            return enroll_begin(home, handle, faces=got.get("face", []), voices=got.get("voice", []), video=video,
                                encoders=ctx.encoders, now=_now())

    @app.post("/v1/cameos/{handle}/enrollments/{enrollment_id}", tags=["cameos"], status_code=201)
    def enroll_complete_post(handle: str, enrollment_id: str, body: ConsentIn,
                             party: Party = Depends(signer)) -> dict[str, Any]:
        """Step 2: the owner's signed consent record; the server seals the templates under it."""
        from cameo._enrollment import enroll_complete

        owner(handle, party)
        with ctx.model_slot():
            return enroll_complete(home, handle, enrollment_id[:64], _b64(body.consent, "consent"), now=_now(),
                                   encoders=ctx.encoders)

    @app.post("/v1/cameos/{handle}/match", tags=["cameos"])
    def match_post(handle: str, body: MatchIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Whether a file shows the owner's own likeness (face search is not a public lookup)."""
        from cameo._enrollment import match

        owner(handle, party)
        with ctx.staged([("file", body.file)]) as got, ctx.model_slot():
            r = match(home, got["file"][0], face_model=None)
        return _only(r, handle)

    # -- generators ----------------------------------------------------------------------------------
    def generator_party(party: Party) -> str:
        if party.kind != "generator":
            raise Problem(403, "only a registered generator signs releases", code="wrong-party")
        return party.name

    def _request(body: RequestIn, got: dict[str, list[Path]]) -> Any:
        from cameo import GenerationRequest

        return GenerationRequest.build(body.prompt, body.params, tuple(got.get("ref", [])))

    @app.post("/v1/checks", tags=["generation"])
    def check_post(body: ReleaseIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Dry-run the gate for this generator: would these tokens release now? Consumes nothing."""
        from conditioning._app import check

        gen = generator_party(party)
        with ctx.staged([("ref", f) for f in body.request.references]) as got, ctx.model_slot():
            return check(home, body.tokens, generator=gen, request=_request(body.request, got), now=_now())

    @app.post("/v1/releases", tags=["generation"], status_code=201)
    def release_post(body: ReleaseIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Release conditioning to the signing generator: the gate decides (tokens verified and
        consumed, references screened) and the bundle comes back sealed to that generator only."""
        from conditioning._remote import release_sealed

        gen = generator_party(party)
        with ctx.staged([("ref", f) for f in body.request.references]) as got, ctx.model_slot():
            r = release_sealed(home, _request(body.request, got), body.tokens, generator=gen, now=_now(),
                               encoders=ctx.encoders)
        r["sealed"] = base64.b64encode(r["sealed"]).decode()
        return r

    @app.post("/v1/releases/{release_id}/outputs", tags=["generation"], status_code=201)
    def outputs_post(release_id: str, body: OutputsIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """The generator's outputs for a release: screened, watermarked, C2PA-signed, recorded, returned."""
        from conditioning._remote import finish_release

        gen = generator_party(party)
        files = [(f.name, _b64(f.data, f"output {f.name[:64]!r}")) for f in body.outputs]
        if any(len(d) > MAX_FILE for _, d in files):
            raise Problem(413, f"an output is larger than {MAX_FILE} bytes", code="file-too-large")
        with ctx.model_slot():
            r = finish_release(home, release_id[:64], files, generator=gen, now=_now(), encoders=ctx.encoders)
        for o in r["outputs"]:
            o["data"] = base64.b64encode(o["data"]).decode()
            for sc in o["sidecars"]:
                sc["data"] = base64.b64encode(sc["data"]).decode()
        return r

    _log_routes(app, home, unsigned)
    from ._web import install as _web_routes

    _web_routes(app, home, signer=signer, owner=owner, raw_body=raw_body, limiter=ctx.signed_limit)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


def _only(result: dict[str, Any], handle: str) -> dict[str, Any]:
    """A match result trimmed to the asking owner: other cameos and protected entries are not named."""
    out = dict(result)
    for key in ("faces", "voices"):
        out[key] = [{**e, "matches": [m for m in e["matches"] if m.get("who") == handle]} for e in result[key]]
    out["matches"] = [m for m in result["matches"] if m == handle]
    out["matched"] = bool(out["matches"])
    return out


def _log_routes(app: FastAPI, home: Any, unsigned: Callable[..., None]) -> None:
    """The transparency log's read endpoints, when the registry has one (public: proofs are for anyone)."""
    try:
        from cameo.registry import _log  # noqa: F401
    except ImportError:
        return


def _errors(app: FastAPI) -> None:
    from cameo._errors import CameoError
    from conditioning._errors import ConditioningError
    from consent import ConsentError

    @app.exception_handler(Problem)
    async def _problem(_: Request, e: Problem) -> Any:
        return problem(e.status, e.detail, code=e.code, headers=e.headers, reasons=e.reasons or None)

    @app.exception_handler(CameoError)
    @app.exception_handler(ConditioningError)
    @app.exception_handler(ConsentError)
    async def _library(_: Request, e: Exception) -> Any:
        return from_error(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> Any:
        errs = [{"code": "request.invalid", "message": f"{'.'.join(str(x) for x in err.get('loc', ()))}: "
                                                       f"{err.get('msg', 'invalid')}"[:300]}
                for err in e.errors()[:20]]
        return problem(422, "the request body does not match the API's schema", code="invalid-request", reasons=errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> Any:
        return problem(e.status_code, str(e.detail), headers=dict(e.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> Any:
        return problem(500, f"internal error ({type(e).__name__})", code="internal")


__all__ = ["PROBLEM", "create_app", "time"]
