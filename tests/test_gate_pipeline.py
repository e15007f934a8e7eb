"""On PostgreSQL a release is two round trips and the commit (psycopg pipeline mode): counted on the
wire with libpq's protocol trace (each Sync or simple Query the client sends waits for the server
once). The race semantics are tests/test_revocation_race.py's and tests/test_gate_release.py's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import GENERATOR
from test_gate_release import ALICE_FACE, ALICE_VOICE, _enroll

from conditioning._errors import GateDenied

PG_ONLY = pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def _round_trips(trace: Path) -> int:
    """Messages the client sends that end a batch and wait for the server's answer."""
    return sum(1 for line in trace.read_text().splitlines() if re.search(r"\bF\s+\d+\s+(Sync|Query)\b", line))


@PG_ONLY
def test_a_release_is_two_round_trips_and_the_commit(registry, tmp_path):
    _enroll(registry, "alice", ALICE_FACE, ALICE_VOICE)
    registry.grant(max_uses=5)
    gate = registry.gate(vault=True)
    gate.decide_release([registry.token()], generator_id=GENERATOR, request=registry.request(), now=registry.now)
    conn = gate._connection()  # the gate's own connection, kept between decisions
    trace = tmp_path / "trace"
    with trace.open("w") as f:
        conn.pgconn.trace(f.fileno())
        try:
            decision, items = gate.decide_release([registry.token()], generator_id=GENERATOR,
                                                  request=registry.request(), now=registry.now)
        finally:
            conn.pgconn.untrace()
    assert decision.allowed and items[0]["face"] is not None
    assert _round_trips(trace) == 3, "\n".join(l for l in trace.read_text().splitlines() if "\tF\t" in l)
    # and the pipelined release still consumes exactly one use per token, once
    tok = registry.token()
    gate.decide_release([tok], generator_id=GENERATOR, request=registry.request(), now=registry.now)
    with pytest.raises(GateDenied):
        gate.decide_release([tok], generator_id=GENERATOR, request=registry.request(), now=registry.now)
    assert registry.grant_row(registry.ids.get("grant") or _grant_id(registry)).uses == 3
    gate.close()


def _grant_id(r):  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with r.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM grants")).scalar_one()
