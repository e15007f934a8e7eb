"""Tables of the HTTP service (``cameo serve``): what several workers or hosts must share.

* ``http_nonces``: the nonce of every signed request still inside its freshness window, so a
  replay through any worker is refused (the primary key makes the second insert fail);
* ``pending_enrollments``: step one of a two-step enrollment (templates computed, consent not yet
  signed), sealed under a KEK-derived key and expiring on its own: never a cameo until sealed;
* ``releases``: a release sealed to a remote generator, awaiting its outputs (one use).
"""

from __future__ import annotations

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ._models import Base


class HttpNonce(Base):
    __tablename__ = "http_nonces"
    key_id: Mapped[str] = mapped_column(String(140), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class PendingEnrollment(Base):
    __tablename__ = "pending_enrollments"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM under the "pending" key; AAD = id, account
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class ReleaseRow(Base):
    __tablename__ = "releases"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    generator: Mapped[str] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(80))
    detail: Mapped[str] = mapped_column(Text)  # claim and the consumed tokens' (jti, owner, purpose)
    expires_at: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # open | done
    mac: Mapped[str] = mapped_column(String(80))
from ._delegation_models import DeviceDelegationRow  # noqa: E402,F401  (the owner page's table, migration 0006)
