"""The ceiling for the replies benchmark: a plain Faust agent over the same topic.

``python -m bench.plain_agent TOPIC COUNT MARKS``: consumes TOPIC in its own consumer group
and appends one JSON line ``{"n": ..., "t": wall-clock seconds}`` to the file MARKS after
the first record and after COUNT records
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import faust

from topology.app import faust_broker_url
from topology.settings import Settings


def main() -> None:
    topic_name, count, marks_path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    s = Settings()
    (s.data_dir / "plain").mkdir(parents=True, exist_ok=True)
    session, heartbeat, rebalance = s.group_timeouts()
    app = faust.App(
        f"bench-plain-{uuid.uuid4().hex[:8]}",
        datadir=str(s.data_dir / "plain"),
        broker=faust_broker_url(s.bootstrap_servers or ""),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        broker_session_timeout=session,
        broker_heartbeat_interval=heartbeat,
        broker_rebalance_timeout=rebalance,
        consumer_auto_offset_reset="earliest",
        topic_partitions=s.partitions,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    # 1: the warm-up record (the agent is running); 2: the burst's first; COUNT: its last.
    marks = {1, 2, count}

    @app.agent(topic)
    async def plain(stream: faust.StreamT[bytes]) -> None:
        n = 0
        async for _event in stream.events():
            n += 1
            if n in marks:
                # Faust takes over stdout for its log: the marks go to their own file.
                with marks_path.open("a") as f:
                    f.write(json.dumps({"n": n, "t": time.time()}) + "\n")

    sys.argv = [sys.argv[0], "worker", "-l", os.environ.get("PLAIN_LOG", "warn")]
    if os.environ.get("OUTAGE_SMS_EVENT_LOOP", "uvloop") == "uvloop":
        # On the worker's event loop (a top-level option of Faust's CLI).
        sys.argv[1:1] = ["--loop", "uvloop"]
    app.main()


if __name__ == "__main__":
    main()
