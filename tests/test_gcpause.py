"""The collector during an evaluation (harness.gcpause): off while the model loads, the load's objects
frozen until the evaluation ends, and the caller's own collector state left as it was."""

from __future__ import annotations

import gc

import pytest

from harness.gcpause import EvaluationHeap


@pytest.fixture(autouse=True)
def _restore_collector():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable() if enabled else gc.disable()


def test_the_collector_is_off_while_loading_and_the_load_is_frozen_until_the_end():
    with EvaluationHeap() as heap:
        with heap.loading():
            during = gc.isenabled()
        after_load = gc.isenabled(), gc.get_freeze_count()
    assert during is False
    assert after_load[0] is True and after_load[1] > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_the_caller_disabled_stays_disabled():
    gc.disable()
    with EvaluationHeap() as heap, heap.loading():
        pass
    assert not gc.isenabled()


def test_objects_the_caller_froze_stay_frozen():
    gc.freeze()
    frozen = gc.get_freeze_count()
    with EvaluationHeap() as heap, heap.loading():
        pass
    assert gc.get_freeze_count() == frozen > 0


def test_an_error_in_the_load_still_restores_the_collector():
    with pytest.raises(RuntimeError), EvaluationHeap() as heap, heap.loading():
        raise RuntimeError("load failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0
