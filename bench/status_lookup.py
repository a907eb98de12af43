"""Status Data Action latency: p50/p99 of ``POST /v1/status``, answered locally and
routed to the other of two workers (the owner of the number's partition).

Starts its own broker (Tansu unless ``--bootstrap``) and two web-enabled workers, loads a
few customers and one outage, then asks each worker in turn about numbers it owns
(local) and numbers the other owns (routed: one more HTTP hop). Requests go one at a
time, as a flow's Data Actions arrive. The run is short on purpose: the machine is shared.

    .venv/bin/python -m bench.status_lookup --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from outage_sms.admin import ensure_topics
from outage_sms.brokers import start_broker, terminate
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

from .fanout import bench_settings, outage, phone, worker_env

SECRET = "bench-secret"  # noqa: S105
HEADERS = {"X-Outage-Sms-Key": SECRET}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(s: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **worker_env(s),
        "OUTAGE_SMS_WEB_ENABLED": "true",
        "OUTAGE_SMS_WEB_PORT": str(port),
        "OUTAGE_SMS_WEB_HOST": "127.0.0.1",
        "OUTAGE_SMS_WEB_SECRET": SECRET,
        "OUTAGE_SMS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "outage_sms", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def _ready(client: httpx.AsyncClient, urls: list[str], partitions: int) -> list[list[int]]:
    """Each worker's partitions, once both are ready and together own them all."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            got = [(await client.get(u + "/ready", headers=HEADERS)).json() for u in urls]
            owned = [g.get("partitions") or [] for g in got]
            if all(g.get("ready") for g in got) and all(owned):
                if sorted(p for o in owned for p in o) == list(range(partitions)):
                    return owned
        await asyncio.sleep(0.5)
    raise RuntimeError("the two workers did not settle in 120 s")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(bootstrap: str, kind: str, requests: int, partitions: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-status-")
    s = bench_settings(
        bootstrap,
        kind,
        f"b{uuid.uuid4().hex[:8]}.",
        partitions,
        "memory://",
        tmp,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_topics(s)
        ports = [_port(), _port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i, port in enumerate(ports):
            procs.append(_spawn(s, port, Path(tmp) / f"worker{i}.log"))
        async with httpx.AsyncClient(timeout=10) as client:
            owned = await _ready(client, urls, partitions)
            numbers = [phone(i) for i in range(64)]
            reg = TopicRegistry(s)
            producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers)
            await producer.start()
            try:
                for n in numbers:
                    rec = {
                        "schema_version": 1,
                        "customer_id": f"C{n}",
                        "phone": n,
                        "regions": ["R1"],
                        "sms_consent": True,
                        "language": "en",
                        "timezone": "America/New_York",
                    }
                    await producer.send_and_wait(
                        reg[Role.CUSTOMER_REGIONS].name, orjson.dumps(rec), key=f"C{n}".encode()
                    )
                await producer.send_and_wait(
                    reg[Role.OUTAGE_EVENTS].name, outage("O1", 1, ["R1"]), key=b"O1"
                )
            finally:
                await producer.stop()

            async def ask(url: str, number: str) -> tuple[float, dict[str, Any]]:
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/status", json={"phone": number}, headers=HEADERS)
                elapsed = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                return elapsed, dict(r.json())

            # Until every number's answer names the outage (fan-out copies reached them).
            deadline = time.monotonic() + 60
            while True:
                answers = [(await ask(urls[0], n))[1]["status"] for n in numbers]
                if all(a == "ongoing" for a in answers):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"answers not ongoing after 60 s: {set(answers)}")
                await asyncio.sleep(0.5)

            def owner(n: str) -> int:
                return 0 if phone_partition(n.encode(), partitions) in owned[0] else 1

            local: list[float] = []
            routed: list[float] = []
            for _ in range(20):  # warm-up: connections, first look-ups
                await ask(urls[0], numbers[0])
            for i in range(requests):
                n = numbers[i % len(numbers)]
                w = i % 2
                ms, _ = await ask(urls[w], n)
                (local if owner(n) == w else routed).append(ms)
        return {
            "broker": kind,
            "partitions": partitions,
            "requests": requests,
            "local": local,
            "routed": routed,
        }
    finally:
        for p in procs:
            terminate(p, grace=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    # Started outside the event loop: the launcher runs its own readiness probe loop.
    broker = None if args.bootstrap else start_broker("tansu")
    try:
        bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
        kind = "kafka" if args.bootstrap else "tansu"
        result = asyncio.run(run(bootstrap, kind, args.requests, args.partitions))
    finally:
        if broker is not None:
            broker.stop()
    print(f"status look-up, {result['broker']}, {result['partitions']} partitions, 2 workers")
    print("| path | n | p50 ms | p99 ms | mean ms |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("local", "routed"):
        v: list[float] = result[name]
        if v:
            print(
                f"| {name} | {len(v)} | {_pct(v, 0.5):.2f} | {_pct(v, 0.99):.2f} "
                f"| {statistics.fmean(v):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
