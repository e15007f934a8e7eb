"""The party side of a registry served over HTTP (``CAMEO_SERVER``): each party's own home holds
only its own keys; documents are signed here, requests are signed here (RFC 9421), and the
registry never sees a private key. Every function returns the same document as the local command.
"""

from ._http import RemoteError, ServerClient, server_url
from ._party import Party

__all__ = ["Party", "RemoteError", "ServerClient", "server_url"]
