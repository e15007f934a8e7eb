from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    """One reason for a denial: a stable machine code and a sentence for people."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Allowed:
    """A verification passed. Never a bare bool (STYLE 4)."""

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Denied:
    """A verification failed, with every reason found."""

    reasons: tuple[Reason, ...]

    def __bool__(self) -> bool:
        return False


Decision = Allowed | Denied
