"""RFC 9457 problem details, carrying the same reason codes and exit codes as the CLI."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

PROBLEM = "application/problem+json"
_STATUS = {2: 400, 3: 403, 4: 404}
_TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Denied", 404: "Not found", 405: "Method not allowed", 408: "Request timeout",
           409: "Conflict", 413: "Body too large", 415: "Unsupported media type", 422: "Invalid request",
           429: "Too many requests", 500: "Internal error", 503: "Busy"}
_EXIT = {400: 2, 401: 3, 403: 3, 404: 4, 405: 2, 408: 1, 409: 2, 413: 2, 415: 2, 422: 2, 429: 1, 500: 1, 503: 1}


class Problem(Exception):
    """An HTTP error raised inside the service (authentication, limits, wrong party)."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, headers: dict[str, str] | None = None,
                 reasons: list[dict[str, str]] | None = None) -> None:
        self.status, self.detail, self.code = status, detail, code
        self.headers, self.reasons = headers or {}, reasons or []
        super().__init__(detail)


def problem(status: int, detail: str, *, code: str | None = None, error_type: str | None = None,
            exit_code: int | None = None, reasons: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    slug = code or _TITLES.get(status, "error").lower().replace(" ", "-")
    body: dict[str, Any] = {"type": f"https://cameo.invalid/problems/{slug}", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail, "code": slug,
                            "exit_code": exit_code if exit_code is not None else _EXIT.get(status, 1)}
    if error_type:
        body["error_type"] = error_type
    if reasons:
        body["reasons"] = reasons
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def from_error(e: Exception) -> JSONResponse:
    """A library error (CameoError, ConditioningError, ConsentError) as a problem document."""
    code = getattr(e, "exit_code", 1)
    status = _STATUS.get(code, 500)
    reasons = [r.as_dict() for r in getattr(e, "reasons", ()) or ()]
    detail = str(e) if status != 500 else f"internal error ({type(e).__name__})"
    return problem(status, detail, code=_slug(type(e).__name__), error_type=type(e).__name__, exit_code=code,
                   reasons=reasons or None)


def _slug(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("-")
        out.append(ch.lower())
    return "".join(out)
