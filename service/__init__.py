"""The HTTP service: ``cameo serve``. An ASGI application (FastAPI) over the registry.

Interface only: parse, authenticate the acting party by its own key (RFC 9421 signatures, see
:mod:`consent._httpsig`), call the library, present, map errors to RFC 9457 problem details.
"""

from ._app import create_app

__all__ = ["create_app"]
