"""The collector's threshold is raised while any holder is inside, restored after the last."""

from __future__ import annotations

import gc

import pytest

from topology.gc_passes import BULK_THRESHOLD, GcHold, fewer_gc_passes


def test_overlapping_holders_restore_the_threshold_once_the_last_leaves() -> None:
    before = gc.get_threshold()
    outer = fewer_gc_passes()
    inner = fewer_gc_passes()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first out is not the last: still raised
    assert gc.get_threshold() == BULK_THRESHOLD
    inner.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_restored_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_gc_passes():
        assert gc.get_threshold() == BULK_THRESHOLD
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_a_hold_spans_callbacks_once_and_nests_with_the_context_manager() -> None:
    before = gc.get_threshold()
    hold = GcHold()
    hold.release()  # without a hold: nothing
    assert gc.get_threshold() == before
    hold.hold()
    hold.hold()  # a recovery restarted by a rebalance: still one hold
    assert hold.held and gc.get_threshold() == BULK_THRESHOLD
    with fewer_gc_passes():  # a fan-out during the hold
        assert gc.get_threshold() == BULK_THRESHOLD
    assert gc.get_threshold() == BULK_THRESHOLD  # the hold is still there
    hold.release()
    assert not hold.held and gc.get_threshold() == before
    hold.release()
    assert gc.get_threshold() == before
