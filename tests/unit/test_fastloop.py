"""The worker's event loop: uvloop for every loop the process makes, Faust's consumer
thread included, once ``use_fast_loops`` ran."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import uvloop

from outage_sms.fastloop import use_fast_loops


@pytest.fixture
def restore_policy() -> Iterator[None]:
    saved = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


def test_every_new_loop_is_uvloop_once_installed(restore_policy: None) -> None:
    assert use_fast_loops() is True
    made: list[asyncio.AbstractEventLoop] = []

    def in_a_thread() -> None:  # as mode's ServiceThread makes its loop
        made.append(asyncio.new_event_loop())

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    made.append(asyncio.new_event_loop())
    try:
        assert all(isinstance(loop, uvloop.Loop) for loop in made)
    finally:
        for loop in made:
            loop.close()
