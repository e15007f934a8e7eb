"""Audit event names as data: one enum of typed tags, the outcome a field (warehouse's
``events/tags.py``). The stored name is ``tag`` or ``tag:outcome``, e.g. ``gate:release:denied``."""

from __future__ import annotations

from enum import StrEnum


class EventTag(StrEnum):
    REGISTRY_INIT = "registry:init"
    REGISTRY_KEY_ADD = "registry:key:add"
    REGISTRY_GENERATOR_ADD = "registry:generator:add"
    REGISTRY_PROTECTED_ADD = "registry:protected:add"
    REGISTRY_INTEGRITY_ALERT = "registry:integrity:alert"
    ACCOUNT_CREATE = "account:create"
    ACCOUNT_FOLLOW = "account:follow"
    CONSENT_GRANT_CREATE = "consent:grant:create"
    CONSENT_GRANT_REVOKE = "consent:grant:revoke"
    CONSENT_WITHDRAW = "consent:withdraw"
    CAMEO_ENROLL = "cameo:enroll"
    CAMEO_DELETE = "cameo:delete"
    TOKEN_MINT = "token:mint"
    GATE_CHECK = "gate:check"
    GATE_RELEASE = "gate:release"
    GATE_OUTPUT = "gate:output"
    SCREEN_MATCH = "screen:match"


class Outcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    WITHHELD = "withheld"


_NAMES = {t.value for t in EventTag} | {f"{t.value}:{o.value}" for t in EventTag for o in Outcome}


def event_name(tag: EventTag | str, outcome: Outcome | str | None = None) -> str:
    """The stored event name; refuses a name that is not a tag (with an optional outcome)."""
    name = str(tag) if outcome is None else f"{tag}:{Outcome(outcome)}"
    if name not in _NAMES:
        raise ValueError(f"unknown audit event {name!r}")
    return name


def outcome_of(name: str) -> str | None:
    """The outcome part of a stored event name (None: an event with no outcome)."""
    head, _, last = name.rpartition(":")
    return last if head and last in Outcome._value2member_map_ else None
