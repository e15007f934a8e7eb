"""The owner's page (``/v1/web/``) and the routes of delegated devices.

How a browser signs in, and what it may do (the documents are :mod:`consent._delegation`'s):

1. ``cameo web alice`` runs on alice's machine. It makes a one-time **ticket key** (Ed25519), signs
   a :class:`~consent.DeviceDelegation` with alice's own key (powers: read, revoke, withdraw,
   delete, devices; a ticket valid 10 minutes; the delegation valid 30 days by default) and
   registers it here (``POST /v1/web/delegations``, an RFC 9421 request signed by alice). It
   prints ``{server}/v1/web/#h=alice&t=<delegation id>&k=<ticket seed>``: the seed is in the
   URL fragment, which a browser never sends to any server.
2. The page (served here, no CDN, strict CSP, no inline script) reads the fragment and removes it
   from the address bar, makes a **device key** with WebCrypto (Ed25519, ``extractable: false``),
   imports the ticket seed (non-extractable too), signs a :class:`~consent.DeviceClaim` naming the
   device's public key with the ticket key, and sends it in a request signed by the device key
   itself (``POST /v1/web/claims``: proof of possession). The registry verifies the chain (alice's
   key -> ticket key -> device key), burns the ticket (a reused or expired link is refused, 403)
   and keeps the device's public key. The page keeps its CryptoKey in IndexedDB, so a reload stays
   signed in; no private key ever leaves the browser and the registry holds none that can sign.
3. From then on every request of the page is signed by the device key (``keyid="device:<id>"``,
   the same RFC 9421 profile as the CLI's, computed with ``crypto.subtle``). Authentication
   (:mod:`service._auth`) accepts a device only under a live delegation: claimed, not expired,
   not signed out, its chain re-verified on each request. Each route then names the power it
   needs: reading her cameo, uses, grants and devices (``read``), deleting the cameo (``delete``),
   signing devices out (``devices``; a device may always sign itself out). Revoking a grant or
   withdrawing consent is a :class:`~consent.DeviceRevocation` document signed in the browser by
   the device key (``POST /v1/web/revocations``), verified against the delegation and applied as
   the owner's own revocation, the audit entry naming the device. Everything else (grants,
   consent, enrollment, tokens) needs the owner's own key: a device gets 403, so a stolen
   browser can stop uses but never start one.

Being signed, requests are CSRF-proof by construction: no cookie carries any authority.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import RedirectResponse, Response

from consent import VerifyKey

from ._auth import Party, RateLimiter, authenticate
from ._problems import Problem

_B64 = r"^[A-Za-z0-9+/=\s]*$"

#: The page's own files (nothing else is served from the package): name -> media type.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "icon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin",
                    "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocIn(_Strict):
    document: str = Field(description="a signed cameo document (its envelope bytes), base64", max_length=1 << 16,
                          pattern=_B64)


class ClaimIn(_Strict):
    claim: str = Field(description="the ticket-key-signed device claim, base64", max_length=1 << 16, pattern=_B64)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _b64(text: str, what: str) -> bytes:
    from cameo import BadInput

    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{what} is not valid base64") from None


def _asset(name: str) -> bytes:
    return resources.files("service").joinpath("static", name).read_bytes()


def _label(user_agent: str) -> str:
    """A short name for a browser from its User-Agent ("Chromium 156 on Linux")."""
    ua = user_agent[:400]
    browser = "a browser"
    for name, pat in (("Edge", r"Edg/(\d+)"), ("Firefox", r"Firefox/(\d+)"), ("Chromium", r"Chrom(?:e|ium)/(\d+)"),
                      ("Safari", r"Version/(\d+)[.\d]* .*Safari/")):
        m = re.search(pat, ua)
        if m:
            browser = f"{name} {m.group(1)}"
            break
    for plat in ("Android", "iPhone", "iPad", "Windows", "Mac OS X", "CrOS", "Linux"):
        if plat in ua:
            return f"{browser} on {'macOS' if plat == 'Mac OS X' else 'ChromeOS' if plat == 'CrOS' else plat}"
    return browser


# -- used by service._auth and service._app -----------------------------------------------------
def device_key(home: Any, device_id: str) -> VerifyKey:
    """The public key of a signed-in device (for authentication). A device that is unknown,
    signed out or expired is 401: the page learns it is signed out."""
    from cameo.registry import engine_for, transaction
    from cameo.registry._delegation_models import UnknownDevice, live_device
    from cameo.registry._trust import IntegrityError

    now = _now()
    try:
        with transaction(engine_for(home)) as s:
            row, _, delegation, key = live_device(s, device_id)
    except (UnknownDevice, IntegrityError):
        raise Problem(401, "this device is not signed in here (unknown device): open a new sign-in link from "
                           "`cameo web HANDLE`", code="device-signed-out") from None
    if row.revoked_at is not None:
        raise Problem(401, f"this device was signed out at {row.revoked_at}", code="device-signed-out")
    if now >= delegation.not_after:
        raise Problem(401, "this device's delegation has expired: open a new sign-in link from `cameo web HANDLE`",
                      code="device-signed-out")
    return key


def device_may(home: Any, party: Party, handle: str, power: str | None) -> None:
    """403 unless the signing device may use ``power`` on ``handle``'s cameo now (None: a route
    no device may use, e.g. enrollment: only the owner's own key widens consent)."""
    from cameo._errors import Denied
    from cameo.registry import engine_for, transaction
    from cameo.registry._delegation_models import UnknownDevice, authorize

    if power is None:
        raise Problem(403, "a device key may only narrow consent (read, revoke, withdraw, delete, devices); "
                           "this needs the owner's own key (the CLI)", code="device-cannot-widen")
    try:
        with transaction(engine_for(home)) as s:
            authorize(s, party.name, handle=handle, power=power, now=_now())
    except Denied as e:
        raise Problem(403, str(e), code="device-denied", reasons=[r.as_dict() for r in e.reasons]) from None
    except UnknownDevice:
        raise Problem(401, "this device is not signed in here", code="device-signed-out") from None


# -- the routes ---------------------------------------------------------------------------------------
def install(app: FastAPI, home: Any, *, signer: Callable[..., Party], owner: Callable[..., None],
            raw_body: Callable[..., Any], limiter: RateLimiter) -> None:
    """Add the page and the delegation routes to ``app``."""

    def page_response(data: bytes, media_type: str, *, cache: str) -> Response:
        return Response(data, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": cache})

    @app.get("/v1/web", include_in_schema=False)
    def web_root() -> Response:
        return RedirectResponse("/v1/web/", status_code=308)  # the fragment stays with the browser

    @app.get("/v1/web/", include_in_schema=False)
    def web_page() -> Response:
        """The owner's page (HTML; its script and style are served beside it)."""
        return page_response(_asset("index.html"), "text/html; charset=utf-8", cache="no-store")

    @app.get("/v1/web/{name}", include_in_schema=False)
    def web_asset(name: str) -> Response:
        if name not in ASSETS:
            raise Problem(404, "no such file", code="not-found")
        return page_response(_asset(name), ASSETS[name], cache="no-cache")

    @app.post("/v1/web/delegations", tags=["owner page"], status_code=201)
    def delegation_post(body: DocIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """Register an owner-signed device delegation (`cameo web`): a one-time sign-in ticket.
        The request is signed by the owner's account key, and the document by the same key."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._delegation_models import offer

        if party.kind != "account":
            raise Problem(403, "only the owner's own key offers a device delegation", code="device-cannot-widen")
        with transaction(engine_for(home)) as s:
            doc = offer(s, _b64(body.document, "document"), now=_now())
            if doc.owner != party.name:
                raise Problem(403, "a delegation is registered by its owner", code="wrong-party")
        return {"delegation_id": doc.id, "owner": doc.owner, "powers": list(doc.powers),
                "claim_by": _fmt(doc.claim_by), "not_after": _fmt(doc.not_after)}

    @app.get("/v1/web/delegations/{delegation_id}", tags=["owner page"])
    def delegation_get(delegation_id: str, request: Request) -> dict[str, Any]:
        """An offered delegation, while its sign-in link can still be used (the page binds its
        claim to this document's digest). Public: it holds no secret, and a used link shows nothing."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._delegation_models import open_offer

        limiter.take("addr:" + (request.client.host if request.client else "?"))
        with transaction(engine_for(home)) as s:
            data = open_offer(s, delegation_id, now=_now())
        return {"document": base64.b64encode(data).decode()}

    @app.post("/v1/web/claims", tags=["owner page"], status_code=201)
    def claim_post(body: ClaimIn, request: Request, raw: bytes = Depends(raw_body)) -> dict[str, Any]:
        """A browser takes up a sign-in ticket with its new device key: the claim is signed by the
        ticket key, the request by the device key (proof of possession). Once per ticket."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._delegation_models import claim, peek_claim

        data = _b64(body.claim, "claim")
        named = peek_claim(data)
        party = authenticate(home, method=request.method, path=request.scope["raw_path"].decode("latin-1"),
                             query=request.scope.get("query_string", b"").decode("latin-1"), body=raw,
                             headers={k.lower(): v for k, v in request.headers.items()}, limiter=limiter,
                             new_account_key=named.device_verify_key.raw)
        if party.kind != "device" or party.name != named.device_id:
            raise Problem(401, "a claim is sent signed by the device key it names", code="bad-signature")
        with transaction(engine_for(home)) as s:
            delegation, doc = claim(s, data, label=_label(request.headers.get("user-agent", "")), now=_now())
        return {"delegation_id": delegation.id, "owner": delegation.owner, "device_id": doc.device_id,
                "powers": list(delegation.powers), "not_after": _fmt(delegation.not_after)}

    @app.post("/v1/web/revocations", tags=["owner page"], status_code=201)
    def device_revocation_post(body: DocIn, party: Party = Depends(signer)) -> dict[str, Any]:
        """A device-signed revocation of one grant, or withdrawal of consent, from the page."""
        from cameo.registry import engine_for, transaction
        from cameo.registry._delegation_models import device_revocation

        if party.kind != "device":
            raise Problem(403, "this route takes a device's revocation; the owner's own goes to /v1/revocations",
                          code="wrong-party")
        with transaction(engine_for(home)) as s:
            return device_revocation(s, _b64(body.document, "document"), device_id=party.name, now=_now())

    @app.get("/v1/cameos/{handle}/devices", tags=["owner page"])
    def devices_get(handle: str, party: Party = Depends(signer)) -> dict[str, Any]:
        """The owner's devices and sign-in links, newest first."""
        from cameo.registry import engine_for, transaction
        from cameo.registry import _services as reg
        from cameo.registry._delegation_models import devices_of

        owner(handle, party, "read")
        with transaction(engine_for(home)) as s:
            out = devices_of(s, reg.get_account(s, handle), now=_now())
        for d in out:
            d["this_device"] = party.kind == "device" and d["device_id"] == party.name
        return {"owner": handle, "devices": out}

    @app.delete("/v1/cameos/{handle}/devices/{ident}", tags=["owner page"])
    def device_delete(handle: str, ident: str, party: Party = Depends(signer)) -> dict[str, Any]:
        """Sign a device out (or cancel an unused link): by the owner, by a device with the
        devices power, or by the device itself."""
        from cameo.registry import engine_for, transaction
        from cameo.registry import _services as reg
        from cameo.registry._delegation_models import sign_out

        if not (party.kind == "device" and ident == party.name):
            owner(handle, party, "devices")
        with transaction(engine_for(home)) as s:
            return sign_out(s, reg.get_account(s, handle), ident, by=party.keyid, now=_now())


def _fmt(dt: datetime) -> str:
    from consent import fmt_time

    return fmt_time(dt)
