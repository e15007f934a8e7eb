"""The provenance of a released output points into the transparency log: its C2PA assertion names
the release's audit entry (one per cameo), and `cameo provenance verify` shows that entry's
inclusion proof once it is in a signed checkpoint (and says it is pending before)."""

from __future__ import annotations

import base64

import pytest
from test_generate_cli import SQLITE_ONLY, Cli, cli  # noqa: F401 - the fixture

from consent import NoteVerifier, leaf_hash, open_checkpoint, verify_inclusion


@SQLITE_ONLY
def test_an_outputs_provenance_names_its_log_entry_and_proves_it(cli: Cli) -> None:
    cli.grant("alice", "--uses", "2")
    out = cli.generate([cli.token()])
    f = out["outputs"][0]["file"]
    pv = cli.json("provenance", "verify", f)
    (eid,) = pv["claim"]["log_entry_ids"]
    assert pv["log_entries"] == [eid] and pv["log"] == [{"entry_id": eid, "status": "pending", "proof": None}]
    use = [e for e in cli.json("usage", "alice")["entries"] if e["entry_id"] == eid]
    assert len(use) == 1 and use[0]["event"] == "gate:release:allowed"  # the release itself
    cp = cli.json("audit", "checkpoint")
    pv = cli.json("provenance", "verify", f)
    (entry,) = pv["log"]
    p = entry["proof"]
    assert entry["status"] == "integrated" and p["tree_size"] == cp["tree_size"]
    root = open_checkpoint(cp["note"], [NoteVerifier.parse(cp["log_key"])]).root
    leaf = leaf_hash(base64.b64decode(p["entry_bytes"]))
    verify_inclusion(leaf, p["leaf_index"], p["tree_size"], [bytes.fromhex(h) for h in p["hashes"]], root)
    assert p["entry"]["entry_id"] == eid and "release" in p["entry"]["event"]
    assert f"{eid} (leaf {p['leaf_index']} of {p['tree_size']})" in cli("provenance", "verify", f).stdout


def test_the_gate_names_the_entries_of_its_last_release_and_none_after_a_denial(registry) -> None:
    from conftest import GENERATOR
    from sqlalchemy import text

    from conditioning._errors import GateDenied

    registry.grant(max_uses=1)
    tok = registry.token()
    gate = registry.gate()
    gate.decide_release([tok], generator_id=GENERATOR, request=registry.request(), now=registry.now,
                        load_templates=False)
    (eid,) = gate.last_log_entries
    with registry.engine.connect() as conn:
        event = conn.execute(text("SELECT event FROM audit_log WHERE entry_id = :e"), {"e": eid}).scalar_one()
    assert event == "gate:release:allowed"
    with pytest.raises(GateDenied):  # used up
        gate.decide_release([tok], generator_id=GENERATOR, request=registry.request(), now=registry.now,
                            load_templates=False)
    assert gate.last_log_entries == ()
