"""Status as data: what each state means, and the SQL lists derived from it."""

from __future__ import annotations

from gateway.outbox import BLOCKS_DEDUP, FINAL, PENDING, Status


def test_pending_states_are_the_ones_a_worker_claims() -> None:
    assert PENDING == (Status.QUEUED, Status.FAILED)
    assert all(s.pending and not s.final for s in PENDING)


def test_every_state_is_pending_or_final_never_both() -> None:
    assert set(PENDING) | set(FINAL) == set(Status)
    assert not set(PENDING) & set(FINAL)


def test_a_sent_delivery_blocks_a_later_copy_but_a_dead_one_does_not() -> None:
    assert BLOCKS_DEDUP == (Status.QUEUED, Status.SENT, Status.FAILED)
    assert Status.SENT.final
    assert Status.SENT.blocks_dedup
    assert not Status.DEAD.blocks_dedup
    assert not Status.DUPLICATE.blocks_dedup
