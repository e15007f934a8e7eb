"""`cameo audit checkpoint | integrate | prove | consistency` and `cameo usage --proofs` through the
command line (typer's CliRunner): the JSON fields issue 13 names, and the exit codes of the
contract (4 for an unknown or not yet integrated entry or a size the log never had, 2 for OLD > NEW)."""

from __future__ import annotations

from test_generate_cli import SQLITE_ONLY, Cli, cli  # noqa: F401 - the fixture

from consent import NoteVerifier, open_checkpoint, verify_consistency, verify_inclusion


@SQLITE_ONLY
def test_the_log_commands(cli: Cli) -> None:
    cli.grant("alice", "--uses", "5")
    cli.json("check", "--token", cli.token(), "--generator", "studio-v1", "--request", "req.json")
    cp1 = cli.json("audit", "checkpoint")
    assert set(cp1) >= {"note", "tree_size", "root_hash", "log_key"}
    key = NoteVerifier.parse(cp1["log_key"])
    assert open_checkpoint(cp1["note"], [key]).root.hex() == cp1["root_hash"]
    assert cli.json("audit", "integrate") == {"leader": True, "integrated": 0, "tree_size": cp1["tree_size"]}
    use = [e for e in cli.json("usage", "alice")["entries"] if e["event"] == "gate:check:allowed"][-1]
    p = cli.json("audit", "prove", use["entry_id"])
    assert set(p) >= {"leaf_index", "tree_size", "leaf_hash", "hashes"} and p["tree_size"] == cp1["tree_size"]
    verify_inclusion(bytes.fromhex(p["leaf_hash"]), p["leaf_index"], p["tree_size"],
                     [bytes.fromhex(h) for h in p["hashes"]], bytes.fromhex(cp1["root_hash"]))
    # a new use is pending until the next checkpoint
    cli.json("check", "--token", cli.token(), "--generator", "studio-v1", "--request", "req.json")
    pending = [e for e in cli.json("usage", "alice")["entries"] if e["event"] == "gate:check:allowed"][-1]
    assert cli.json("audit", "prove", pending["entry_id"], code=4)["error_type"] == "NotIntegrated"
    assert cli.json("audit", "prove", "ent_" + "0" * 32, code=4)["error_type"] == "UnknownEntry"
    cp2 = cli.json("audit", "checkpoint")
    q = cli.json("audit", "consistency", str(cp1["tree_size"]), str(cp2["tree_size"]))
    assert (q["first_size"], q["second_size"]) == (cp1["tree_size"], cp2["tree_size"])
    verify_consistency(q["first_size"], q["second_size"], [bytes.fromhex(h) for h in q["hashes"]],
                       bytes.fromhex(cp1["root_hash"]), bytes.fromhex(cp2["root_hash"]))
    assert cli.json("audit", "prove", use["entry_id"], "--tree-size", str(cp1["tree_size"]))["hashes"] == p["hashes"]
    cli.json("audit", "consistency", str(cp2["tree_size"]), str(cp1["tree_size"]), code=2)
    cli.json("audit", "consistency", "1", str(cp2["tree_size"] + 7), code=4)
    # usage --proofs: every entry carries its proof against the latest checkpoint
    u = cli.json("usage", "alice", "--proofs")
    assert u["checkpoint"]["tree_size"] == cp2["tree_size"]
    assert all(e["proof"] is not None and e["proof"]["tree_size"] == cp2["tree_size"] for e in u["entries"])
    out = cli("audit", "verify").stdout
    assert f"{cp2['tree_size']} in the transparency log under 2 signed checkpoints, 0 pending" in out
    assert "tree size" in cli("audit", "checkpoint").stdout
