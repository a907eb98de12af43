"""The worker's event loop: uvloop's unless the settings say asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from outage_sms.worker import new_loop
from topology.settings import Settings

uvloop = pytest.importorskip("uvloop")


@pytest.fixture(autouse=True)
def restore_policy() -> Iterator[None]:
    """The uvloop policy is process-wide: put the test process's own back."""
    saved = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


@pytest.mark.parametrize(("setting", "on_uvloop"), [("asyncio", False), ("uvloop", True)])
def test_the_worker_loop_follows_the_setting(setting: str, on_uvloop: bool) -> None:
    loop = new_loop(Settings(event_loop=setting))  # type: ignore[arg-type]
    try:
        assert isinstance(loop, uvloop.Loop) is on_uvloop
        # Faust's consumer thread makes its own loop later: the same kind.
        later = asyncio.new_event_loop()
        try:
            assert isinstance(later, uvloop.Loop) is on_uvloop
        finally:
            later.close()
    finally:
        loop.close()
