"""``outage-sms demo`` as a user runs it: the whole system end to end, within a deadline.

Outcomes are checked from the demo's JSON summary, which holds what the fake provider
actually received per customer (by customer id, never a phone number) and the funnel
read from the topics; the demo's own checks are not taken on trust.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.integration

OUTAGE_KINDS = {"alert", "update", "restored"}


def run_demo(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "demo.json"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "outage_sms", "demo", "--json", str(out), "--stage-timeout", "45"],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done, orjson.loads(out.read_bytes())


def test_the_demo_runs_end_to_end_and_honours_every_rule(tmp_path: Path) -> None:
    done, summary = run_demo(tmp_path)
    received: dict[str, list[str]] = summary["received"]
    groups: dict[str, list[str]] = summary["groups"]

    # Everyone in the outage's regions with consent and a mobile-capable number got the
    # alert, an update (the ETA moved by 90 minutes) and "restored": unless they opted out.
    alerted = {c for c, kinds in received.items() if "alert" in kinds}
    assert len(alerted) > 200

    # STOP: the alert before, the one confirmation, then nothing.
    assert len(groups["stopped"]) == 2
    for cid in groups["stopped"]:
        assert received[cid] == ["alert", "confirmation"], cid

    # No consent, a landline, a region outside the outage: no outage text at all.
    assert groups["no_consent"] and groups["landline"] and groups["outside_outage"]
    for cid in groups["no_consent"] + groups["landline"] + groups["outside_outage"]:
        assert not OUTAGE_KINDS & set(received.get(cid, [])), cid
    assert not received.get(groups["landline"][0])

    # Restored only to those alerted; updates likewise.
    for kind in ("update", "restored"):
        assert {c for c, ks in received.items() if kind in ks} <= alerted
    everyone_else = alerted - set(groups["stopped"])
    assert all(received[c].count("restored") == 1 for c in everyone_else)

    # Status questions got an answer; the one outside the outage too.
    asked = {cid for cid, text in summary["inbound"] if "stop" not in text.lower()}
    assert all(set(received[c]) & {"reply", "help"} for c in asked)

    # The funnel read from sms.audit / sms.delivery-status agrees with what was received.
    total = summary["outage"]["total"]
    assert total["pending"] == 0
    outage_texts = sum(1 for ks in received.values() for k in ks if k in OUTAGE_KINDS)
    assert total["outcomes"].get("sent") == outage_texts
    assert total["suppressed_at_fanout"]["opted_out"] == 4  # 2 numbers x (update, restored)
    assert total["suppressed_at_fanout"]["landline"] >= 1
    assert total["suppressed_at_fanout"]["no_consent"] >= len(groups["no_consent"]) // 2
    assert summary["provider"]["violation_total"] == 0

    # What the operator saw: quiet hours said to be off, live progress, masked numbers.
    out = done.stdout
    assert "Quiet hours are OFF" in out
    assert len(re.findall(r"\] alerts: ", out)) >= 1
    assert re.search(r"\+1\d{3}\*{5}\d{2}", out)
    assert not re.search(r"\+\d{11}", out), "a full phone number in the output"
    print(f"checked: demo in {summary['wall_seconds']}s, {outage_texts} outage texts")


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "outage_sms", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    pid = None
    deadline = time.monotonic() + 60
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"worker ready \(pid (\d+)", line)
        if m:
            pid = int(m.group(1))
            break
        if time.monotonic() > deadline:
            break
    try:
        assert pid is not None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "every process it started was stopped" in rest
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("command", ["demo", "plan", "report"])
def test_the_operator_commands_have_help(command: str) -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "outage_sms", command, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert f"usage: outage-sms {command}" in done.stdout
