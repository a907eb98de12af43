"""Dispatcher throughput against the fake Genesys: achieved vs configured rate.

20 senders at 100 msg/s each (2,000 msg/s configured), a backlog of ``--seconds`` worth of
commands already queued, the fake provider and each dispatcher in their own processes.
Reports the aggregate rate between 10% and 90% of the backlog (the steady state), the
fake's rate-violation count, and the CPU each dispatcher process used.

    python -m bench.dispatch --broker tansu --dispatchers 1 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from outage_sms.admin import ensure_topics
from outage_sms.brokers import start_broker, terminate
from topology.emitter import BatchEmitter
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

from .fanout import bench_settings, worker_env

RESULTS = Path(__file__).parent / "results"


@dataclass
class DispatchResult:
    broker: str
    dispatchers: int
    senders: int
    rate: float
    commands: int
    achieved: float
    violations: int
    cpu_cores: list[float]
    seconds: float

    @property
    def share(self) -> float:
        return self.achieved / (self.senders * self.rate)


def _sender(i: int) -> str:
    return f"+1415700{i:04d}"


def _commands(n: int, senders: int) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        to = f"+1415{5000000 + i:07d}"
        out.append(
            (
                to,
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "command_id": f"bench:{i}",
                        "kind": "alert",
                        "from": _sender(i % senders),
                        "to": to,
                        "body": "Outage Alerts: power out near you, ETA 3:30 PM. "
                        "Reply STOP to opt out",
                        "encoding": "gsm7",
                        "segments": 1,
                        "created_at": now.isoformat(),
                        "expires_at": (now + timedelta(hours=1)).isoformat(),
                    }
                ),
            )
        )
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    bootstrap: str, kind: str, dispatchers: int, senders: int, rate: float, seconds: float
) -> DispatchResult:
    tmp = tempfile.mkdtemp(prefix="bench-dispatch-")
    s: Settings = bench_settings(bootstrap, kind, f"b{uuid.uuid4().hex[:8]}.", 8, "memory://", tmp)
    pool = [
        {"id": _sender(i), "type": "short_code", "rate": rate, "countries": ["US"]}
        for i in range(senders)
    ]
    await ensure_topics(s)
    reg = TopicRegistry(s)
    n = int(senders * rate * seconds)
    emitter = BatchEmitter(bootstrap)
    for to, value in _commands(n, senders):
        await emitter.add(
            reg[Role.SEND_COMMANDS].name, phone_partition(to.encode(), 8), [(to.encode(), value)]
        )
    await emitter.stop()
    print(f"queued {n:,} commands for {senders} senders at {rate:g}/s", file=sys.stderr)

    fake_args = [sys.executable, "-m", "outage_sms.fake_provider", "--client-limit", "0"]
    for i in range(senders):
        fake_args += ["--sender", f"{_sender(i)}={rate}"]
    fake = subprocess.Popen(fake_args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert fake.stdout is not None  # noqa: S101
    url = fake.stdout.readline().decode().strip()
    env = {
        **worker_env(s),
        "OUTAGE_SMS_SENDERS": orjson.dumps(pool).decode(),
        "OUTAGE_SMS_CLIENT_REQUESTS_PER_MINUTE": "10000000",
        "OUTAGE_SMS_GENESYS_CLIENT_ID": "fake-client",
        "OUTAGE_SMS_GENESYS_CLIENT_SECRET": "fake-secret",
        "OUTAGE_SMS_GENESYS_API_URL": url,
    }
    logs = [Path(tmp) / f"dispatcher{i}.log" for i in range(dispatchers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "outage_sms", "dispatcher"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    samples: list[tuple[float, int]] = []
    cpu: dict[int, tuple[float, float]] = {}
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            deadline = time.monotonic() + seconds * 4 + 120
            while True:
                stats = (await client.get("/fake/stats")).json()
                now = time.monotonic()
                samples.append((now, stats["accepted"]))
                if stats["accepted"] >= 0.1 * n and not cpu:
                    cpu = {p.pid: (now, _cpu_seconds(p.pid)) for p in procs}
                if stats["accepted"] >= 0.9 * n and all(len(v) == 2 for v in cpu.values()):
                    used = [
                        (_cpu_seconds(p.pid) - cpu[p.pid][1]) / (now - cpu[p.pid][0]) for p in procs
                    ]
                    break
                if now > deadline or any(p.poll() is not None for p in procs):
                    tails = "\n".join(log.read_text()[-2000:] for log in logs)
                    raise RuntimeError(f"dispatch bench stalled at {stats}:\n{tails}")
                await asyncio.sleep(0.25)
            violations = int(stats["violation_total"])
    finally:
        for p in procs:
            terminate(p, grace=30)
        terminate(fake, grace=5)
    start = next((t, a) for t, a in samples if a >= 0.1 * n)
    end = samples[-1]
    achieved = (end[1] - start[1]) / (end[0] - start[0])
    return DispatchResult(
        kind, dispatchers, senders, rate, n, achieved, violations, used, end[0] - start[0]
    )


def render(results: list[DispatchResult]) -> list[str]:
    lines = [
        "| broker | dispatchers | configured | achieved | share | violations "
        "| CPU per dispatcher |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.dispatchers} | {r.senders} x {r.rate:g}/s = "
            f"{r.senders * r.rate:,.0f}/s | {r.achieved:,.0f}/s | {r.share:.1%} | "
            f"{r.violations} | {', '.join(f'{c:.2f} cores' for c in r.cpu_cores)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    p.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    p.add_argument("--dispatchers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=20.0, help="backlog, in seconds of sending")
    p.add_argument("--out", type=Path, default=RESULTS / "dispatch.md")
    args = p.parse_args(argv)
    broker = start_broker(args.broker)
    results: list[DispatchResult] = []
    try:
        for d in args.dispatchers:
            r = asyncio.run(
                run(broker.bootstrap, args.broker, d, args.senders, args.rate, args.seconds)
            )
            print("\n".join(render([r])[2:]), file=sys.stderr)
            results.append(r)
    finally:
        broker.stop()
    text = "\n".join(
        [
            "# Dispatcher: achieved vs configured rate (fake Genesys over loopback)",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine (2 cores: the "
            "fake provider, the broker and the dispatchers share them). Steady state: "
            "between 10% and 90% of the backlog sent.",
            "",
            *render(results),
            "",
        ]
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
