"""The command line as a user runs it."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from outage_sms.cli import build_parser, main
from tests.kafka_helpers import TopicReader, produce
from topology.topics import Role

COMMANDS = [
    [],
    ["worker"],
    ["broker"],
    ["topics"],
    ["topics", "create"],
    ["topics", "list"],
    ["schemas"],
    ["schemas", "export"],
    ["dispatcher"],
    ["audit"],
    ["audit", "replay"],
    ["demo"],
    ["plan"],
    ["report"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "outage-sms")
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: outage-sms" in capsys.readouterr().out


def test_every_subcommand_is_covered_by_the_help_test() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    assert set(sub.choices) == {a[0] for a in COMMANDS if a}  # type: ignore[union-attr]


def test_schemas_export_check_passes_on_the_committed_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schemas", "export", "--check"]) == 0


def test_schemas_export_check_fails_when_a_file_is_stale(tmp_path: Path) -> None:
    assert main(["schemas", "export", "--dir", str(tmp_path)]) == 0
    victim = tmp_path / "sms.inbound.schema.json"
    victim.write_text(victim.read_text().replace("message_id", "msg_id"))
    assert main(["schemas", "export", "--dir", str(tmp_path), "--check"]) == 1


def test_unreachable_broker_gives_an_actionable_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["topics", "create"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Kafka broker at 127.0.0.1:1" in err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err


def test_invalid_configuration_is_reported_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTAGE_SMS_PARTITIONS", "zero")
    assert main(["topics", "list"]) == 2
    assert "OUTAGE_SMS_PARTITIONS" in capsys.readouterr().err.upper()


def readline_within(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or a failure after ``timeout`` seconds (a child that
    hangs before printing must fail the test, not hang it)."""
    box: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: box.put(stream.readline()), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"nothing on stdout within {timeout}s") from None


def test_broker_command_starts_a_real_tansu_broker_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OUTAGE_SMS_"))}
    env["OUTAGE_SMS_TOPIC_PREFIX"] = "e2e."
    argv = [sys.executable, "-m", "outage_sms", "broker", "--kind", "tansu", "--create-topics"]
    err_path = tmp_path / "stderr.txt"
    # stderr to a file: a pipe nobody reads could fill up and stall the child.
    with (
        err_path.open("w") as err_file,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_file, env=env, text=True) as proc,
    ):
        try:
            assert proc.stdout is not None
            line = readline_within(proc.stdout, timeout=60).strip()
            assert line.startswith("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:"), (
                f"{line!r}\n{err_path.read_text()}"
            )
            bootstrap = line.split("=", 1)[1]

            async def round_trip() -> list[bytes | None]:
                await produce(bootstrap, "e2e.sms.inbound", [(b"+14155550101", b"hello")])
                reader = TopicReader(bootstrap, "e2e.sms.inbound")
                await reader.until(lambda r: len(r.records) == 1, timeout=30, what="1 record")
                await reader.close()
                return [v for _, v in reader.records]

            assert asyncio.run(round_trip()) == [b"hello"]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    err = err_path.read_text()
    assert proc.returncode == 0, err
    assert f"created {len(Role)} topics" in err


def test_worker_refuses_missing_topics_when_told_not_to_create_them(tmp_path: Path, broker) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTAGE_SMS_")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "OUTAGE_SMS_TOPIC_PREFIX": "nope.",
            "OUTAGE_SMS_STORE": "memory://",
            "OUTAGE_SMS_DATA_DIR": str(tmp_path),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "outage_sms", "worker", "--no-create-topics"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "missing topics" in done.stderr and "outage-sms topics create" in done.stderr


def test_broker_on_a_taken_port_fails_clearly_and_leaves_no_temporary_directory(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OUTAGE_SMS_"))}
    env["TMPDIR"] = str(tmp_path)  # where the launcher makes its working directory
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "outage_sms", "broker", "--kind", "tansu", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"could not bind port {port}" in done.stderr and "--port" in done.stderr
    assert not list(tmp_path.glob("outage-sms-*")), "the failed start's workdir was removed"


# ---- misconfiguration at start-up: fail fast (or warn), naming the fix ---------------

ACTIVE = '[{"id": "87654", "type": "short_code", "countries": ["US"]}]'


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OUTAGE_SMS_* or KAFKA_* from the caller's shell; an address nothing listens on,
    so a process that got past its configuration checks says so by naming the broker."""
    for name in list(os.environ):
        if name.startswith(("OUTAGE_SMS_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return monkeypatch


def test_dispatcher_without_credentials_stops_before_contacting_anything(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dispatcher"]) == 2
    err = capsys.readouterr().err
    assert "OUTAGE_SMS_GENESYS_CLIENT_ID" in err and "OUTAGE_SMS_GENESYS_CLIENT_SECRET" in err
    assert "cannot reach" not in err  # checked before the broker


@pytest.mark.parametrize("role", ["worker", "dispatcher"])
@pytest.mark.parametrize(
    ("senders", "needles"),
    [
        ('[{"id": "87654", "type": "short_code"', ["OUTAGE_SMS_SENDERS is not valid JSON"]),
        ("[]", ["OUTAGE_SMS_SENDERS must be a non-empty JSON list"]),
        (
            '[{"id": "87654", "type": "short_code", "countries": ["US"], "status": "pending"}]',
            ["no active sender", "87654 (pending)", '"status": "active"'],
        ),
        (
            '[{"id": "CityPower", "type": "alphanumeric", "countries": ["GB"]}]',
            ["sender id 'CityPower'", "E.164", "short code", "OUTAGE_SMS_SENDERS"],
        ),
    ],
    ids=["malformed-json", "empty", "none-active", "id-not-a-number"],
)
def test_unusable_sender_pool_stops_the_process_naming_the_fix(
    role: str,
    senders: str,
    needles: list[str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("OUTAGE_SMS_SENDERS", senders)
    clean_env.setenv("OUTAGE_SMS_GENESYS_CLIENT_ID", "id")
    clean_env.setenv("OUTAGE_SMS_GENESYS_CLIENT_SECRET", "secret")
    assert main([role]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert "cannot reach" not in err  # checked before the broker


def test_dispatcher_lists_every_problem_at_once(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("OUTAGE_SMS_SENDERS", "not json")
    assert main(["dispatcher"]) == 2
    err = capsys.readouterr().err
    assert "the dispatcher cannot start:" in err
    assert "OUTAGE_SMS_SENDERS is not valid JSON" in err
    assert "OUTAGE_SMS_GENESYS_CLIENT_ID" in err


def test_an_inactive_sender_is_a_warning_and_the_worker_goes_on(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean_env.setenv(
        "OUTAGE_SMS_SENDERS",
        '[{"id": "87654", "type": "short_code", "countries": ["US"]},'
        ' {"id": "+447911123457", "type": "long_code", "countries": ["GB"], "status": "pending"}]',
    )
    assert main(["worker"]) == 2
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "sender +447911123457 (long_code) is pending" in warned
    assert "no active sender serves GB" in warned
    # It went on to the next check: the broker (nothing listens on 127.0.0.1:1).
    assert "cannot reach the Kafka broker at 127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.parametrize("role", ["worker", "dispatcher"])
def test_unreachable_broker_stops_worker_and_dispatcher_within_a_bounded_wait(
    role: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OUTAGE_SMS_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "OUTAGE_SMS_SENDERS": ACTIVE,
            "OUTAGE_SMS_GENESYS_CLIENT_ID": "id",
            "OUTAGE_SMS_GENESYS_CLIENT_SECRET": "secret",
            "OUTAGE_SMS_STORE": "memory://",
            "OUTAGE_SMS_DATA_DIR": str(tmp_path),
        }
    )
    # The timeout fails the test if the process waits for the broker forever.
    done = subprocess.run(
        [sys.executable, "-m", "outage_sms", role],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "error: cannot reach the Kafka broker at 127.0.0.1:1" in done.stderr
    assert "check KAFKA_BOOTSTRAP_SERVERS" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({}, "needs credentials: set OUTAGE_SMS_WEB_SECRET"),
        ({"OUTAGE_SMS_WEB_BASIC_USER": "genesys"}, "set OUTAGE_SMS_WEB_BASIC_PASSWORD too"),
    ],
    ids=["none", "half-basic"],
)
def test_worker_web_server_without_credentials_stops_before_the_broker(
    extra: dict[str, str],
    needle: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("OUTAGE_SMS_WEB_ENABLED", "true")
    for name, value in extra.items():
        clean_env.setenv(name, value)
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "cannot reach" not in err
