"""``python -m bench.run``: run the benchmarks and write bench/results/latest.md.

Each figure is reported beside its ceiling from the same run (this machine is noisy).
Brokers are started here (Tansu, and Apache Kafka with --broker kafka or both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import traceback
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outage_sms.brokers import running_broker

from .ceilings import Measurement, consumer_getmany, make_records, producer_batch, producer_send
from .dispatch import DispatchResult, LatencyResult, latency, render_latency
from .dispatch import render as render_dispatch
from .dispatch import run as dispatch_run
from .fanout import LATE_OUTAGE_AFTER_S, FanoutResult, fanout_bench, summarize
from .replay import replay_bench
from .replies import RepliesResult, render_replies, replies_bench

RESULTS = Path(__file__).parent / "results"


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def ceilings(bootstrap: str, n: int, partitions: int) -> list[Measurement]:
    records = make_records(n)
    run = uuid.uuid4().hex[:8]
    out = []
    progress(f"  producer batch API, {n:,} records ...")
    out.append(await producer_batch(bootstrap, f"bench.{run}.batch", records, partitions))
    progress(f"  producer send() per message, {n:,} records ...")
    out.append(await producer_send(bootstrap, f"bench.{run}.send", records, partitions))
    progress("  consumer getmany + orjson ...")
    out.append(await consumer_getmany(bootstrap, f"bench.{run}.batch", n))
    return out


def render_fanout(runs: list[FanoutResult]) -> list[str]:
    if not runs:
        return []
    lines = [
        "",
        "## Fan-out (issue 3): one outage, every customer in one region, one worker",
        "",
        "Commands/s from producing the outage event to the last command acknowledged on "
        "`sms.send-commands`; the ceiling is the same command records through aiokafka's "
        "batch API in the same run. Store: RocksDB. Targets: >= 100,000/s and >= 20% of "
        "the ceiling; RSS < 1.5 GiB; outage to first command p99 < 200 ms at idle. "
        "Start to processing: a new worker (empty data dir) recovering every table from "
        "its changelog, to the first command of an outage produced at its start. "
        'Restarted: the same worker over the data dir it left, start to "Worker ready", '
        "and the first command of an outage produced "
        f"{LATE_OUTAGE_AFTER_S:.0f} s after that (its views built in the background).",
        "",
        "| broker | customers | commands/s | ceiling/s | share | first command (1M) "
        "| idle p50 / p99 | worker RSS (peak) | start to processing: new "
        "| restarted: ready / later outage |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        x = summarize(r)
        lines.append(
            f"| {x['broker']} | {x['customers']:,} | {x['commands_per_s'] or 0:,.0f} "
            f"| {x['ceiling_per_s'] or 0:,.0f} | {x['share'] or 0:.0%} "
            f"| {(x['first_command_s'] or 0) * 1000:,.0f} ms "
            f"| {x['idle_p50_ms'] or 0:,.0f} / {x['idle_p99_ms'] or 0:,.0f} ms "
            f"| {x['rss_mib'] or 0:,.0f} MiB ({x['hwm_mib'] or 0:,.0f}) "
            f"| {x['restart_s'] or 0:,.1f} s "
            + (
                f"| {x['warm_restart_s']:,.1f} s / {x['late_outage_ms']:,.0f} ms |"
                if x["warm_restart_s"] is not None and x["late_outage_ms"] is not None
                else "| - |"
            )
        )
    for r in runs:
        x = summarize(r)
        if x["idle_hops_ms"]:
            hops = "; ".join(f"{k} {a:,.0f} / {b:,.0f}" for k, (a, b) in x["idle_hops_ms"].items())
            load = x["load"]
            lines += [
                "",
                f"Idle latency, {r.broker}, {x['idle_samples']} outages one at a time, by hop "
                f"(p50 / p99 ms, from record timestamps): {hops}"
                + (f". Load average then: {load[0]:.1f}." if load else "."),
            ]
            warm = sorted(x["idle_warmup_ms"])
            if warm:
                lines[-1] += (
                    f" Before them, {len(warm)} warm-up outages left out: p50 "
                    f"{statistics.median(warm):,.0f}, max {warm[-1]:,.0f} ms "
                    "(`bench.fanout.IDLE_WARMUP` says why)."
                )
    notes = [f"- {r.broker}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", "Worker log lines:", "", *notes]
    return lines


def render(
    results: dict[str, list[Measurement]],
    n: int,
    fanouts: list[FanoutResult] | None = None,
    replies: list[RepliesResult] | None = None,
    dispatches: list[DispatchResult] | None = None,
    latencies: list[LatencyResult] | None = None,
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{n:,} records of ~200 bytes. Regenerate: "
        "`.venv/bin/python -m bench.run --broker both`.",
        "",
        "## Ceilings (raw aiokafka, same records)",
        "",
        "| broker | path | records/s | share of batch API |",
        "| --- | --- | ---: | ---: |",
    ]
    for broker, ms in results.items():
        top = ms[0].rate
        for m in ms:
            lines.append(f"| {broker} | {m.name} | {m.rate:,.0f} | {m.rate / top:.0%} |")
    lines += render_fanout(fanouts or [])
    lines += render_replies(replies or [])
    if dispatches:
        lines += [
            "",
            "## Dispatcher (issue 5): achieved vs configured rate, fake Genesys on loopback",
            "",
            "Steady state between 10% and 90% of a backlog; the HTTP ceiling is one process "
            "sending through the same GenesysClient to the same fake, without Kafka, in the "
            "same run. Target: >= 95% of the configured rate, zero violations.",
            "",
            *render_dispatch(dispatches),
        ]
    for lat in latencies or []:
        lines += [
            "",
            f"Outage event to the first provider request ({lat.broker}; target p99 < 1 s):",
            "",
            *render_latency(lat),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--broker", choices=["tansu", "kafka", "both"], default="tansu")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument(
        "--fanout-customers",
        type=int,
        default=1_000_000,
        help="customers in the fan-out benchmark (0 skips it)",
    )
    p.add_argument(
        "--idle-samples",
        type=int,
        default=100,
        help="outages sent one at a time for the fan-out's idle latency",
    )
    p.add_argument(
        "--reply-texts",
        type=int,
        default=20_000,
        help="inbound texts in the replies benchmark (0 skips it)",
    )
    p.add_argument(
        "--dispatch-seconds",
        type=float,
        default=15.0,
        help="backlog of the dispatcher benchmark, in seconds of sending (0 skips it)",
    )
    p.add_argument(
        "--replay-customers",
        type=int,
        default=20_000,
        help="customers (and half as many texts) in the audit replay benchmark (0 skips it)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = p.parse_args(argv)
    kinds = ["tansu", "kafka"] if args.broker == "both" else [args.broker]
    results: dict[str, list[Measurement]] = {}
    fanouts: list[FanoutResult] = []
    replies: list[RepliesResult] = []
    dispatches: list[DispatchResult] = []
    latencies: list[LatencyResult] = []
    failures: list[str] = []
    replay: list[str] = []

    def save() -> str:
        """Written after every benchmark: a later one that fails loses nothing before it."""
        text = render(results, args.records, fanouts, replies, dispatches, latencies)
        if replay:
            text += (
                "\n## Audit replay (issue 6): input records re-derived on one core, no broker\n\n"
                "Target: >= 50,000 input records/s. Synthetic customers, outages and texts in "
                "memory; the ceiling is orjson alone on the same records.\n\n" + replay[0] + "\n"
            )
        if failures:
            text += "\n## Failed in this run\n\n" + "".join(f"- {f}\n" for f in failures)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        return text

    def attempt(kind: str, name: str, sink: list[Any], bench: Coroutine[Any, Any, Any]) -> None:
        progress(f"{kind}: {name}")
        try:
            sink.append(asyncio.run(bench))
        except Exception as exc:  # noqa: BLE001 (reported, and the other benchmarks still run)
            progress(f"{kind}: {name} FAILED: {exc!r}\n{traceback.format_exc(limit=3)}")
            failures.append(f"{kind}, {name}: {str(exc).splitlines()[0][:300]}")
        save()

    for kind in kinds:
        progress(f"{kind}: starting broker")
        with running_broker(kind, progress=progress) as broker:  # type: ignore[arg-type]
            bootstrap = broker.bootstrap
            results[kind] = asyncio.run(ceilings(bootstrap, args.records, args.partitions))
            bench: Coroutine[Any, Any, Any]
            if args.fanout_customers:
                bench = fanout_bench(
                    bootstrap,
                    kind,
                    args.fanout_customers,
                    args.partitions,
                    "rocksdb://",
                    progress,
                    args.idle_samples,
                )
                attempt(kind, "fan-out benchmark", fanouts, bench)
            if args.reply_texts:
                bench = replies_bench(bootstrap, kind, args.reply_texts, args.partitions, progress)
                attempt(kind, "replies benchmark", replies, bench)
            if args.dispatch_seconds:
                for rate, counts in ((100.0, (1, 2)), (20.0, (1,))):
                    for d in counts:
                        bench = dispatch_run(bootstrap, kind, d, 20, rate, args.dispatch_seconds)
                        name = f"dispatcher benchmark, {d} x 20 senders at {rate:g}/s"
                        attempt(kind, name, dispatches, bench)
                bench = latency(bootstrap, kind, 20, 50)
                attempt(kind, "outage to first provider request", latencies, bench)
    if args.replay_customers:
        progress("audit replay benchmark (one core, no broker)")
        try:
            replay.append(replay_bench(args.replay_customers, args.replay_customers // 2))
        except Exception as exc:  # noqa: BLE001 (reported like the others)
            failures.append(f"audit replay: {str(exc).splitlines()[0][:300]}")
    print(save())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
