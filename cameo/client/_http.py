"""HTTP to a registry server: TLS rules, request signing, problem details back to typed errors."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from consent import Reason, SigningKey
from consent._httpsig import sign_request

from .._errors import BadInput, CameoError

#: An explicit, loudly named switch for a lab: plain HTTP to a host that is not this machine.
INSECURE_ENV = "CAMEO_INSECURE_PLAINTEXT_HTTP_FOR_LAB"


class RemoteError(CameoError):
    """An error the server reported (a problem document): same message, reasons and exit code as
    the local command would give."""

    def __init__(self, message: str, *, exit_code: int, status: int, error_type: str | None,
                 reasons: tuple[Reason, ...] = ()) -> None:
        self.exit_code = exit_code
        self.status = status
        self.error_type = error_type
        self.reasons = reasons
        super().__init__(message)


class Unreachable(CameoError):
    """The server did not answer."""

    exit_code = 1


def server_url() -> str | None:
    """The server named by ``CAMEO_SERVER`` (unset or empty: the local registry)."""
    url = os.environ.get("CAMEO_SERVER", "").strip()
    return url.rstrip("/") or None


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"CAMEO_SERVER must be an http(s) URL, not {url[:80]!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        if os.environ.get(INSECURE_ENV) != "1":
            raise BadInput(f"refusing plain http:// to {parts.hostname}: enrollment uploads are biometric data. "
                           f"Use https://, or for a lab only set {INSECURE_ENV}=1")
        print(f"WARNING: {INSECURE_ENV}=1: talking to {parts.hostname} over UNENCRYPTED HTTP", file=sys.stderr)
    return url.rstrip("/")


class ServerClient:
    """One registry server. ``call`` signs with ``(keyid, key)`` when given."""

    def __init__(self, url: str, *, timeout: float = 600.0) -> None:
        import httpx

        self.url = check_url(url)
        import ssl

        ca = os.environ.get("CAMEO_SERVER_CA")
        verify: Any = ssl.create_default_context(cafile=ca) if ca else True
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=verify, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
             signer: tuple[str, SigningKey] | None = None, allow: tuple[int, ...] = (),
             query: dict[str, str] | None = None) -> Any:
        import httpx
        from urllib.parse import urlencode

        qs = urlencode(query or {})

        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        if signer is not None:
            keyid, key = signer
            headers.update(sign_request(key, keyid=keyid, method=method, path=path, query=qs, body=raw,
                                        created=int(time.time())))
        try:
            resp = self._http.request(method, path + (f"?{qs}" if qs else ""),
                                      content=raw if body is not None else None, headers=headers)
        except httpx.HTTPError as e:
            raise Unreachable(f"the registry server at {self.url} did not answer ({type(e).__name__})") from None
        if resp.status_code in allow:
            return None
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if resp.is_success:
            return doc
        raise _problem(resp.status_code, doc)


def _problem(status: int, doc: Any) -> RemoteError:
    if not isinstance(doc, dict):
        return RemoteError(f"the server answered HTTP {status}", exit_code=1, status=status, error_type=None)
    reasons = tuple(Reason(str(r.get("code", "")), str(r.get("message", "")))
                    for r in doc.get("reasons") or () if isinstance(r, dict))
    code = doc.get("exit_code")
    if not isinstance(code, int) or code not in (1, 2, 3, 4):
        code = {400: 2, 401: 3, 403: 3, 404: 4, 413: 2, 422: 2}.get(status, 1)
    return RemoteError(str(doc.get("detail") or doc.get("title") or f"HTTP {status}"), exit_code=code,
                       status=status, error_type=doc.get("error_type"), reasons=reasons)
