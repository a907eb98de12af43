"""``python -m bench.uvloop_worker``: ``outage-sms worker`` on uvloop's event loop.

For ``OUTAGE_SMS_BENCH_UVLOOP=1 python -m bench.run ...``: measures what uvloop would give
the worker before anyone changes ``outage_sms/worker.py``, which builds its loop with
``asyncio.new_event_loop()`` and so follows the policy installed here.
"""

from __future__ import annotations

import uvloop

from outage_sms.cli import main

if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(main(["worker"]))
