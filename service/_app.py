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

import asyncio
import base64
import binascii
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi import Query
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
#: a body that stalls this long is refused (408): a slow client holds no worker (CAMEO_SERVE_RECEIVE_TIMEOUT)
RECEIVE_TIMEOUT_S = float(os.environ.get("CAMEO_SERVE_RECEIVE_TIMEOUT", "30"))
BODY_DEADLINE_S = 120.0

_B64 = r"^[A-Za-z0-9+/=\s]*$"
#: a handle in a path (consent.HANDLE_RE): anything else is refused by the schema (422)
Handle = Annotated[str, PathParam(pattern=r"^[a-z][a-z0-9_-]{1,31}$", description="an account handle")]
ResourceId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


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
        deadline = asyncio.get_running_loop().time() + BODY_DEADLINE_S

        async def limited() -> Message:
            nonlocal seen
            left = deadline - asyncio.get_running_loop().time()
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(0.001, min(left, RECEIVE_TIMEOUT_S)))
            except asyncio.TimeoutError:
                if not answered:  # answer now; the application sees the client gone
                    await self._slow(scope, receive, send_once)
                return {"type": "http.disconnect"}
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        answered = False  # a response has started (the application's or ours)
        ours = False  # ... and it is our 408

        async def send_once(msg: Message) -> None:
            nonlocal answered, ours
            if msg["type"] == "http.response.start":
                answered = ours = True
            await send(msg)

        async def app_send(msg: Message) -> None:
            nonlocal answered
            if ours and msg["type"].startswith("http.response"):
                return  # our 408 went first: the application's late answer is dropped
            if msg["type"] == "http.response.start":
                answered = True
            await send(msg)

        try:
            await self.app(scope, limited, app_send)
        except _TooLarge:
            if not answered:
                await self._refuse(scope, receive, send_once)

    async def _slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problem(408, f"the body did not arrive in time ({RECEIVE_TIMEOUT_S:.0f} s without data, or "
                            f"{BODY_DEADLINE_S:.0f} s in all)", code="request-timeout", headers={"Connection": "close"})
        await resp(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problem(413, f"the body is larger than {self.limit} bytes", code="body-too-large",
                       headers={"Connection": "close"})
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass




def _rate_setting() -> tuple[float, int]:
    """Signed requests per key: ``CAMEO_SERVE_RATE=rate:burst`` (per second, per worker; default 20:60)."""
    text = os.environ.get("CAMEO_SERVE_RATE", "20:60")
    try:
        rate, burst = text.split(":")
        return max(0.01, float(rate)), max(1, int(burst))
    except ValueError:
        return 20.0, 60


MAX_MEDIA_SECONDS = 120.0  # an enrollment clip, a selfie video or a reference: longer is refused


def _check_durations(paths: list[Path]) -> None:
    """Refuse audio or video longer than :data:`MAX_MEDIA_SECONDS` before any model looks at it
    (a small file can hold hours of low-rate audio). What cannot be read is left to the pipeline,
    which names the file in a typed error."""
    for p in paths:
        seconds = None
        try:
            import soundfile

            seconds = float(soundfile.info(str(p)).duration)
        except Exception:  # noqa: BLE001 - not audio soundfile reads: try it as a container
            try:
                import av

                with av.open(str(p)) as c:
                    seconds = c.duration / 1_000_000 if c.duration else None
            except Exception:  # noqa: BLE001 - not media av reads either (an image, or garbage)
                seconds = None
        if seconds is not None and seconds > MAX_MEDIA_SECONDS:
            raise Problem(413, f"{p.name[:64]} lasts {seconds:.0f} s; at most {MAX_MEDIA_SECONDS:.0f} s is accepted",
                          code="media-too-long")


class _Context:
    """What one worker keeps: the registry's home, the encoders (models load once), the limits."""

    def __init__(self, home: Any, *, model_slots: int = MODEL_SLOTS) -> None:
        from cameo import Encoders

        self.home = home
        self.encoders = Encoders(None)
        self.models = threading.BoundedSemaphore(model_slots)
        rate, burst = _rate_setting()
        self.signed_limit = RateLimiter(rate=rate, burst=burst)
        self.open_limit = RateLimiter(rate=50.0, burst=200)

    @contextmanager
    def model_slot(self, needed: bool = True) -> Iterator[None]:
        """One of the worker's model slots, for work that runs a model (embedding, screening media).
        A release or check without references needs none: its gate decision is database work, and
        holding a slot through it would cap concurrent decisions at the slot count."""
        if not needed:
            yield
            return
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
            _check_durations([p for ps in out.values() for p in ps])
            yield out
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def create_app(home: Any = None) -> FastAPI:
    """The application over ``home`` (default: CAMEO_HOME / CAMEO_DATABASE_URL of the process)."""
    from cameo.registry import Home

    home = home or Home.resolve()
    home.require()
    ctx = _Context(home)
    app = FastAPI(title="cameo registry", version=API_VERSION, lifespan=_integrating,
                  description="Consent-gated likeness registry. Writes are signed by the acting party's own "
                              "Ed25519 key (RFC 9421 HTTP Message Signatures); errors are RFC 9457 problem details.")
    app.state.home = home
    _errors(app)

    async def raw_body(request: Request) -> bytes:
        return await request.body()

    def verify(request: Request, raw: bytes, new_account_key: bytes | None = None) -> Party:
        return authenticate(home, method=request.method, path=request.scope["raw_path"].decode("latin-1"),
                            query=request.scope.get("query_string", b"").decode("latin-1"), body=raw,
                            headers={k.lower(): v for k, v in request.headers.items()}, limiter=ctx.signed_limit,
                            new_account_key=new_account_key)

    def signer(request: Request, raw: bytes = Depends(raw_body)) -> Party:
        return verify(request, raw)

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
        return {"ok": True, "version": API_VERSION, "worker": os.getpid()}

    @app.get("/v1/trust", tags=["meta"], dependencies=[Depends(unsigned)])
    def trust() -> dict[str, Any]:
        """The registry's public trust root: C2PA trust anchor, token verification keys. Pin it."""
        from conditioning._generate import authority_for

        anchors = authority_for(home).trust_anchors.decode("ascii")
        return {"c2pa_trust_anchors": anchors, "token_key": home.token_signing_key().public.b64()}

    # -- accounts ------------------------------------------------------------------------------
    @app.get("/v1/accounts/{handle}", tags=["accounts"], dependencies=[Depends(unsigned)])
    def account_get(handle: Handle) -> dict[str, Any]:
        from cameo.registry._served import account_public

        return account_public(home, handle[:64])

    @app.post("/v1/accounts", tags=["accounts"], status_code=201)
    def account_post(body: AccountIn, request: Request, raw: bytes = Depends(raw_body)) -> dict[str, Any]:
        """Create an account for a key made on the party's machine; signed by that key (proof of possession)."""
        from cameo.registry._served import account_create

        key = _b64(body.public_key, "public_key")
        party = verify(request, raw, new_account_key=key)
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
    def cameo_get(handle: Handle, party: Party = Depends(signer)) -> dict[str, Any]:
        from cameo._enrollment import show

        owner(handle, party, "read")
        return show(home, handle)

    @app.get("/v1/cameos/{handle}/usage", tags=["cameos"])
    def usage_get(handle: Handle, party: Party = Depends(signer),
                  proofs: bool = Query(default=False, description="each use with its inclusion proof")) -> dict[str, Any]:
        from cameo.registry._app import usage

        owner(handle, party, "read")
        return usage(home, handle, proofs=proofs)

    @app.get("/v1/cameos/{handle}/grants", tags=["cameos"])
    def grants_get(handle: Handle, party: Party = Depends(signer)) -> dict[str, Any]:
        from cameo.registry._app import grants

        owner(handle, party, "read")
        return grants(home, handle, now=_now())

    @app.delete("/v1/cameos/{handle}", tags=["cameos"])
    def cameo_delete(handle: Handle, party: Party = Depends(signer)) -> dict[str, Any]:
        """Withdraw consent and crypto-shred the cameo (its data key is destroyed)."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._cameos import delete_cameo

        owner(handle, party, "delete")
        with transaction(engine_for(home)) as s:
            return delete_cameo(s, handle, now=_now())

    @app.post("/v1/cameos/{handle}/enrollments", tags=["cameos"], status_code=201)
    def enroll_post(handle: Handle, body: EnrollIn, party: Party = Depends(signer)) -> dict[str, Any]:
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
    def enroll_complete_post(handle: Handle, enrollment_id: ResourceId, body: ConsentIn,
                             party: Party = Depends(signer)) -> dict[str, Any]:
        """Step 2: the owner's signed consent record; the server seals the templates under it."""
        from cameo._enrollment import enroll_complete

        owner(handle, party)
        with ctx.model_slot():
            return enroll_complete(home, handle, enrollment_id[:64], _b64(body.consent, "consent"), now=_now(),
                                   encoders=ctx.encoders)

    @app.post("/v1/cameos/{handle}/match", tags=["cameos"])
    def match_post(handle: Handle, body: MatchIn, party: Party = Depends(signer)) -> dict[str, Any]:
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
        refs = [("ref", f) for f in body.request.references]
        with ctx.staged(refs) as got, ctx.model_slot(bool(refs)):
            return check(home, body.tokens, generator=gen, request=_request(body.request, got), now=_now())

    @app.post("/v1/releases", tags=["generation"], status_code=201)
    def release_post(body: ReleaseIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Release conditioning to the signing generator: the gate decides (tokens verified and
        consumed, references screened) and the bundle comes back sealed to that generator only."""
        from conditioning._remote import release_sealed

        gen = generator_party(party)
        refs = [("ref", f) for f in body.request.references]
        with ctx.staged(refs) as got, ctx.model_slot(bool(refs)):
            r = release_sealed(home, _request(body.request, got), body.tokens, generator=gen, now=_now(),
                               encoders=ctx.encoders)
        r["sealed"] = base64.b64encode(r["sealed"]).decode()
        return r

    @app.post("/v1/releases/{release_id}/outputs", tags=["generation"], status_code=201)
    def outputs_post(release_id: ResourceId, body: OutputsIn, party: Party = Depends(signer)) -> dict[str, Any]:
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
    _document_problems(app)
    return app


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Problem", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details, with the CLI's exit code and reason codes.",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"}, "exit_code": {"type": "integer"},
                   "error_type": {"type": "string"},
                   "reasons": {"type": "array", "items": {"type": "object", "properties": {
                       "code": {"type": "string"}, "message": {"type": "string"}}}}}}
_ERRORS = {"400": "Bad input (exit 2)", "401": "Not signed, wrongly signed, stale or replayed",
           "403": "Denied, or not this party's to do (exit 3)", "404": "Not found (exit 4)",
           "408": "The body did not arrive in time", "413": "Body too large", "422": "The body does not match the schema", "429": "Rate limited",
           "500": "Internal error", "503": "Busy with model work"}


def _document_problems(app: FastAPI) -> None:
    """Every operation documents its error responses as ``application/problem+json`` (what it
    sends), instead of FastAPI's default 422 shape."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                for code, text in _ERRORS.items():
                    responses[code] = {"description": text, "content": {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for name in ("HTTPValidationError", "ValidationError"):
            doc["components"]["schemas"].pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _only(result: dict[str, Any], handle: str) -> dict[str, Any]:
    """A match result trimmed to the asking owner: other cameos and protected entries are not named."""
    out = dict(result)
    for key in ("faces", "voices"):
        out[key] = [{**e, "matches": [m for m in e["matches"] if m.get("who") == handle]} for e in result[key]]
    out["matches"] = [m for m in result["matches"] if m == handle]
    out["matched"] = bool(out["matches"])
    return out


def _log_routes(app: FastAPI, home: Any, unsigned: Callable[..., None]) -> None:
    """The transparency log's read endpoints. Public: checkpoints and proofs are hashes and
    signatures, verifiable offline with only the log key; an entry's content is not shown here
    (its owner reads it with their usage, ``?proofs=1``)."""
    from cameo.registry import engine_for, transaction
    from cameo.registry._log import consistency_proof, inclusion_proof, latest_checkpoint

    @app.get("/v1/log/checkpoint", tags=["log"], dependencies=[Depends(unsigned)])
    def log_checkpoint() -> dict[str, Any]:
        """The latest signed checkpoint (C2SP signed note), with the log's verifier key."""
        with transaction(engine_for(home)) as s:
            return latest_checkpoint(s)

    @app.get("/v1/log/proof/{entry_id}", tags=["log"], dependencies=[Depends(unsigned)])
    def log_proof(entry_id: ResourceId, tree_size: int | None = Query(default=None, ge=1, le=1 << 40)) -> dict[str, Any]:
        """The inclusion proof of one entry (leaf index, leaf hash, audit path) against a checkpoint."""
        with transaction(engine_for(home)) as s:
            doc = inclusion_proof(s, entry_id, tree_size)
        doc.pop("entry", None)
        doc.pop("entry_bytes", None)
        return doc

    @app.get("/v1/log/consistency", tags=["log"], dependencies=[Depends(unsigned)])
    def log_consistency(first: int = Query(ge=0, le=1 << 40), second: int = Query(ge=0, le=1 << 40)) -> dict[str, Any]:
        """The proof that the tree at size ``second`` extends the tree at size ``first``."""
        with transaction(engine_for(home)) as s:
            return consistency_proof(s, first, second)


@asynccontextmanager
async def _integrating(app: FastAPI) -> AsyncIterator[None]:
    """Every worker runs an integrator; one wins the log's leader lock (an advisory lock on
    PostgreSQL, a file lock on SQLite) and integrates, the others wait to take over."""
    from cameo.registry._log import Integrator

    integrator = None
    try:
        integrator = Integrator.for_home(app.state.home)
        integrator.start()
    except Exception as e:  # noqa: BLE001 - a registry without the log key serves, but says so
        import logging

        logging.getLogger("cameo.serve").warning("transparency log integrator not started: %s", type(e).__name__)
    try:
        yield
    finally:
        if integrator is not None:
            integrator.stop()


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
