"""``python -m bench.run``: run the benchmarks and write bench/results/latest.md.

Each figure is reported beside its ceiling from the same run (this machine is noisy).
Brokers are started here (Tansu, and Apache Kafka with --broker kafka or both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from outage_sms.brokers import running_broker

from .ceilings import Measurement, consumer_getmany, make_records, producer_batch, producer_send

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


def render(results: dict[str, list[Measurement]], n: int) -> str:
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--broker", choices=["tansu", "kafka", "both"], default="tansu")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = p.parse_args(argv)
    kinds = ["tansu", "kafka"] if args.broker == "both" else [args.broker]
    results: dict[str, list[Measurement]] = {}
    for kind in kinds:
        progress(f"{kind}: starting broker")
        with running_broker(kind, progress=progress) as broker:  # type: ignore[arg-type]
            results[kind] = asyncio.run(ceilings(broker.bootstrap, args.records, args.partitions))
    text = render(results, args.records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
