"""The delivery worker against a fake outbox and a fake destination: claim, batch, send,
classify, write back, retry timing, lease keeping, isolating a refused event, stopping.

Requests the fake destination sends go to a real HTTP server on 127.0.0.1 (`fake_platform`);
where no request needs to go out, the destination does not send (`sends=False`) and the test
decides each verdict. The lease-keeping tests run on a loop with a virtual clock, so the keeper's
ten-second ticks take no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.delivery import Worker, backoff_s
from gateway.delivery.retry import AGE_MARGIN_S
from gateway.delivery.worker import LEASE_MIN_S
from gateway.destinations.base import Answer, OutRequest, Result, Verdict
from gateway.outbox import Status
from gateway.settings import Batch, Retry
from tests.conftest import FakePlatform, Recorded, eventually
from tests.fakes import FakeDestination, FakeOutbox, FakeSettings, VirtualClockLoop


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def verdict(v: Verdict, message: str = "", **kw: Any) -> Callable[[OutRequest, Answer], Result]:
    """A classify that answers every request the same."""
    return lambda request, answer: Result(v, message or str(v), **kw)


def settings(**kw: Any) -> FakeSettings:
    kw.setdefault("batch", Batch(max_wait_ms=0))
    return FakeSettings(**kw)


async def deliver_all(worker: Worker, outbox: FakeOutbox) -> None:
    """Claim every due row of the worker's destination and deliver it as one batch."""
    claimed = await outbox.claim(worker.destination.name, 1000, worker.lease_s)
    await worker.deliver(claimed)


@contextlib.asynccontextmanager
async def running(worker: Worker, outbox: FakeOutbox, grace_s: float = 2.0) -> AsyncIterator[None]:
    outbox.on_queued = lambda destinations: worker.wake()
    worker.start()
    try:
        yield
    finally:
        await worker.stop(grace_s)


def finals(outbox: FakeOutbox) -> bool:
    return all(r.status not in (Status.QUEUED, Status.FAILED) for r in outbox.rows.values())


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_base_to_max_with_equal_jitter() -> None:
    rng = random.Random(7)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 10.0), (80, 10.0)]:
        delays = [backoff_s(attempt, 500, 10_000, rng=rng) for _ in range(200)]
        assert cap / 2 <= min(delays), attempt
        assert max(delays) <= cap, attempt
        assert max(delays) - min(delays) > cap / 4, "no jitter"  # a crowd spreads out


def test_backoff_never_sooner_than_retry_after() -> None:
    assert backoff_s(1, 500, 10_000, retry_after_s=42.0) == 42.0
    assert backoff_s(1, 500, 10_000, retry_after_s=0.01) >= 0.25


# --- one batch: verdicts and what is written back ---------------------------------------------


async def test_a_sent_batch_is_written_sent_and_loses_its_payload(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(3)]
    dest = FakeDestination(classify=verdict(Verdict.SENT), sends=False)
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    assert dest.sent_ids() == [ids]  # one request carried the whole batch
    for i in ids:
        row = outbox.rows[i]
        assert (row.status, row.attempts, row.payload) == (Status.SENT, 1, None)
        assert row.leased_until == 0


async def test_a_destination_that_keeps_payloads_keeps_them_when_sent(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    row_id = outbox.put("fake", {"n": 1})
    dest = FakeDestination(classify=verdict(Verdict.SENT), sends=False, keeps_payload=True)
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    assert outbox.status(row_id) is Status.SENT
    assert outbox.rows[row_id].payload == b'{"n":1}'


async def test_a_refused_event_is_dead_and_keeps_its_payload_for_replay(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    row_id = outbox.put("fake", {"n": 1})
    dest = FakeDestination(classify=verdict(Verdict.DEAD, "bad pixel"), sends=False)
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    row = outbox.rows[row_id]
    assert (row.status, row.attempts, row.message) == (Status.DEAD, 1, "bad pixel")
    assert row.payload == b'{"n":1}'


async def test_rows_past_the_age_limit_or_without_payload_are_dead_and_never_sent(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    now = int(time.time())
    old = outbox.put("fake", {"n": 1}, event_time=now - 7201)
    fresh = outbox.put("fake", {"n": 2}, event_time=now - 7000)
    empty = outbox.put("fake", None, event_time=now)
    dest = FakeDestination(classify=verdict(Verdict.SENT), sends=False, max_age_s=7200)
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    assert dest.sent_ids() == [[fresh]]  # the old one never rides with fresh events
    assert outbox.status(fresh) is Status.SENT
    assert (outbox.status(old), outbox.rows[old].message) == (
        Status.DEAD,
        "older than the platform's age limit",
    )
    assert (outbox.status(empty), outbox.rows[empty].message) == (Status.DEAD, "payload missing")
    assert outbox.rows[old].attempts == 0  # never tried


async def test_one_refused_event_is_isolated_by_halving_and_the_rest_are_sent(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(8)]
    bad = ids[5]

    def classify(request: OutRequest, answer: Answer) -> Result:
        if any(item.delivery_id == bad for item in request.items):
            return Result(Verdict.SPLIT, "one event spoils the batch")
        return Result(Verdict.SENT, "ok")

    dest = FakeDestination(classify=classify, sends=False)
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    assert outbox.status(bad) is Status.DEAD
    assert outbox.rows[bad].message == "one event spoils the batch"
    assert all(outbox.status(i) is Status.SENT for i in ids if i != bad)
    # 8 → 4+4 → 2+2 → 1+1: seven requests, the halves without it sent once each.
    assert [len(r) for r in dest.sent_ids()] == [8, 4, 4, 2, 2, 1, 1]
    sent = [
        item.delivery_id
        for request, _, result in dest.classified
        if result.verdict is Verdict.SENT
        for item in request.items
    ]
    assert sorted(sent) == [i for i in ids if i != bad]


async def test_each_request_is_written_back_as_its_answer_arrives(
    session: aiohttp.ClientSession, fake_platform: FakePlatform
) -> None:
    release = asyncio.Event()

    async def slow(r: Recorded) -> web.Response:
        await release.wait()
        return web.json_response({})

    fake_platform.then(slow)  # the first request hangs; the second is answered at once
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(4)]
    dest = FakeDestination(url=fake_platform.url, per_request=2, settings=settings(concurrency=2))
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    delivery = asyncio.create_task(deliver_all(worker, outbox))
    try:
        await eventually(lambda: len(outbox.finished) == 1)
        # The fast request's rows are final while the slow one is still on the wire.
        first = {o.id for o in outbox.finished[0]}
        assert len(first) == 2
        assert {outbox.status(i) for i in first} == {Status.SENT}
        assert {outbox.status(i) for i in set(ids) - first} == {Status.QUEUED}
    finally:
        release.set()
        await delivery
    assert len(outbox.finished) == 2
    assert {outbox.status(i) for i in ids} == {Status.SENT}


# --- retry timing ------------------------------------------------------------------------------


async def retried(
    session: aiohttp.ClientSession, retry: Retry, result: Result, **row: Any
) -> tuple[Any, float, float]:
    """One row retried once: the row after, and the clock before and after."""
    outbox = FakeOutbox()
    max_age_s = row.pop("max_age_s", None)
    row_id = outbox.put("fake", {"n": 1}, **row)
    dest = FakeDestination(
        settings=settings(retry=retry),
        classify=lambda request, answer: result,
        sends=False,
        max_age_s=max_age_s,
    )
    before = time.time()
    await deliver_all(Worker(dest, outbox, session), outbox)  # type: ignore[arg-type]
    return outbox.rows[row_id], before, time.time()


async def test_a_transient_failure_is_retried_after_the_backoff(
    session: aiohttp.ClientSession,
) -> None:
    row, before, after = await retried(
        session, Retry(base_ms=4000, max_ms=60_000), Result(Verdict.RETRY, "HTTP 503"), attempts=2
    )
    # The third attempt: 4 s doubled twice, of which a random half to all.
    assert (row.status, row.attempts, row.message) == (Status.FAILED, 3, "HTTP 503")
    assert before + 8 <= row.next_attempt_at <= after + 16
    assert row.payload == b'{"n":1}'
    assert before <= row.first_attempt_at <= after  # the budget starts at the first attempt


async def test_a_retry_waits_at_least_what_retry_after_asks(
    session: aiohttp.ClientSession,
) -> None:
    row, before, after = await retried(
        session, Retry(base_ms=500), Result(Verdict.RETRY, "slow down", retry_after_s=120.0)
    )
    assert row.status is Status.FAILED
    assert before + 120 <= row.next_attempt_at <= after + 120


async def test_max_attempts_gives_up(session: aiohttp.ClientSession) -> None:
    row, _, _ = await retried(
        session, Retry(max_attempts=3), Result(Verdict.RETRY, "HTTP 503"), attempts=2
    )
    assert (row.status, row.attempts) == (Status.DEAD, 3)
    assert row.message == "gave up after 3 attempts: HTTP 503"


async def test_a_backoff_past_the_budget_gets_one_last_try_when_it_ends(
    session: aiohttp.ClientSession,
) -> None:
    first = time.time() - 59.0
    row, _, _ = await retried(
        session,
        Retry(base_ms=30_000, max_ms=60_000, give_up_after=60),
        Result(Verdict.RETRY, "HTTP 503"),
        attempts=1,
        first_attempt_at=first,
    )
    assert row.status is Status.FAILED
    assert row.next_attempt_at == first + 60


async def test_a_spent_budget_gives_up_and_says_after_how_long(
    session: aiohttp.ClientSession,
) -> None:
    row, _, _ = await retried(
        session,
        Retry(give_up_after=60),
        Result(Verdict.RETRY, "HTTP 503"),
        attempts=4,
        first_attempt_at=time.time() - 61.5,
    )
    assert row.status is Status.DEAD
    assert row.message == "gave up after 1m1s and 5 attempts: HTTP 503"


async def test_a_retry_after_past_the_budget_gives_up_now(session: aiohttp.ClientSession) -> None:
    row, _, _ = await retried(
        session,
        Retry(give_up_after=60),
        Result(Verdict.RETRY, "slow down", retry_after_s=120.0),
        first_attempt_at=time.time() - 10.5,
    )
    assert row.status is Status.DEAD
    assert row.message == "gave up after 10s and 1 attempts: slow down"


async def test_no_retry_would_come_before_the_platforms_age_limit(
    session: aiohttp.ClientSession,
) -> None:
    # Within the age limit now, but the last useful try was AGE_MARGIN_S before it: passed.
    row, _, _ = await retried(
        session,
        Retry(),
        Result(Verdict.RETRY, "HTTP 503"),
        event_time=int(time.time()) - 7200 + int(AGE_MARGIN_S) // 2,
        max_age_s=7200,
    )
    assert row.status is Status.DEAD
    assert row.message == "would pass the platform's age limit before the next try: HTTP 503"


async def test_the_last_try_comes_before_the_age_limit(session: aiohttp.ClientSession) -> None:
    event_time = int(time.time()) - 7200 + int(AGE_MARGIN_S) + 30
    row, _, _ = await retried(
        session,
        Retry(base_ms=120_000, max_ms=300_000),
        Result(Verdict.RETRY, "HTTP 503"),
        event_time=event_time,
        max_age_s=7200,
    )
    assert row.status is Status.FAILED
    assert row.next_attempt_at == event_time + 7200 - AGE_MARGIN_S


# --- a running worker --------------------------------------------------------------------------


async def test_the_worker_claims_batches_of_batch_size_and_delivers_the_queue(
    session: aiohttp.ClientSession,
) -> None:
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(5)]
    other = outbox.put("other", {"n": 9})
    dest = FakeDestination(
        settings=settings(batch=Batch(max_events=2, max_wait_ms=0)),
        classify=verdict(Verdict.SENT),
        sends=False,
    )
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    async with running(worker, outbox):
        await eventually(lambda: all(outbox.status(i) is Status.SENT for i in ids))
    assert {limit for _, limit, _ in outbox.claims} == {2}
    assert {name for name, _, _ in outbox.claims} == {"fake"}
    assert sorted(len(r) for r in dest.sent_ids()) == [1, 2, 2]
    assert outbox.status(other) is Status.QUEUED  # another destination's row is not its to take


async def test_a_row_queued_while_idle_wakes_the_worker(session: aiohttp.ClientSession) -> None:
    outbox = FakeOutbox()
    dest = FakeDestination(classify=verdict(Verdict.SENT), sends=False)
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    async with running(worker, outbox):
        await asyncio.sleep(0.05)  # idle: nothing queued
        row_id = outbox.put("fake", {"n": 1})
        outbox.on_queued(["fake"])
        started = time.monotonic()
        await eventually(lambda: outbox.status(row_id) is Status.SENT)
        # Well before the idle recheck (1 s) would have found it.
        assert time.monotonic() - started < 0.8


async def test_no_more_than_two_batches_are_held_at_once(
    session: aiohttp.ClientSession, fake_platform: FakePlatform
) -> None:
    release = asyncio.Event()

    async def held(r: Recorded) -> web.Response:
        await release.wait()
        return web.json_response({})

    fake_platform.default = held
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(10)]
    dest = FakeDestination(
        url=fake_platform.url,
        settings=settings(batch=Batch(max_events=1, max_wait_ms=0), concurrency=1),
    )
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    try:
        async with running(worker, outbox):
            await eventually(lambda: len(fake_platform.requests) == 1)
            await asyncio.sleep(0.2)  # time to claim more, were it allowed to
            leased = [r.id for r in outbox.rows.values() if r.leased_until > 0]
            assert len(leased) == 2  # one on the wire, the next one claimed and built
            release.set()
            await eventually(lambda: all(outbox.status(i) is Status.SENT for i in ids))
    finally:
        release.set()


async def test_a_refused_token_pauses_the_destination_until_a_probe_passes(
    session: aiohttp.ClientSession, fake_platform: FakePlatform
) -> None:
    fake_platform.then(lambda r: web.Response(status=401), lambda r: web.Response(status=401))
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(3)]
    dest = FakeDestination(
        url=fake_platform.url,
        per_request=1,
        settings=settings(concurrency=1, retry=Retry(auth_probe_ms=400)),
    )
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    gauge = ("tag_gateway_destination_auth_failed", {"destination": "fake"})
    started = time.time()
    async with running(worker, outbox):
        await eventually(lambda: len(outbox.finished) == 3)
        # One request refused the token; the batch's two others waited unsent.
        assert len(fake_platform.requests) == 1
        assert worker.metrics.registry.get_sample_value(*gauge) == 1
        assert worker.health.auth_error == "token expired"
        for i in ids:
            row = outbox.rows[i]
            assert (row.status, row.attempts) == (Status.QUEUED, 0)  # the token's fault
            assert row.message == "waiting for working credentials: token expired"
            assert row.next_attempt_at >= started + 0.4  # when the probe may go
        # Probes of one event each, until one passes; then everything goes.
        await eventually(lambda: all(outbox.status(i) is Status.SENT for i in ids))
    assert len(fake_platform.requests) == 2 + 3  # the refused one, a refused probe, then 3
    assert [limit for _, limit, rows in outbox.claims if rows][1:3] == [1, 1]
    assert worker.metrics.registry.get_sample_value(*gauge) == 0
    assert worker.health.auth_error is None


async def test_stop_lets_a_request_on_the_wire_finish_within_the_grace(
    session: aiohttp.ClientSession, fake_platform: FakePlatform
) -> None:
    async def slow(r: Recorded) -> web.Response:
        await asyncio.sleep(0.3)
        return web.json_response({})

    fake_platform.default = slow
    outbox = FakeOutbox()
    on_the_wire, waiting = outbox.put("fake", {"n": 1}), outbox.put("fake", {"n": 2})
    dest = FakeDestination(url=fake_platform.url, per_request=1, settings=settings(concurrency=1))
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    worker.start()
    await eventually(lambda: len(fake_platform.requests) == 1)
    await worker.stop(2.0)  # 1 s of it for the requests, the rest to write back
    assert outbox.status(on_the_wire) is Status.SENT
    # The request waiting for the slot never started: its row is back in the queue, unsent.
    assert len(fake_platform.requests) == 1
    row = outbox.rows[waiting]
    assert (row.status, row.attempts, row.leased_until) == (Status.QUEUED, 0, 0.0)
    assert [row_id for leases in outbox.returned for row_id, _ in leases] == [waiting]


async def test_stop_gives_back_every_row_not_finished_within_the_grace(
    session: aiohttp.ClientSession, fake_platform: FakePlatform
) -> None:
    release = asyncio.Event()

    async def held(r: Recorded) -> web.Response:
        await release.wait()
        return web.json_response({})

    fake_platform.default = held
    outbox = FakeOutbox()
    ids = [outbox.put("fake", {"n": i}) for i in range(4)]
    # One request at a time: one row on the wire, the rest of its batch and the next batch
    # waiting for the slot.
    dest = FakeDestination(
        url=fake_platform.url,
        per_request=1,
        settings=settings(batch=Batch(max_events=2, max_wait_ms=0), concurrency=1),
    )
    worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
    worker.start()
    try:
        await eventually(lambda: len(fake_platform.requests) == 1)
        await eventually(lambda: sum(1 for r in outbox.rows.values() if r.leased_until) == 4)
        started = time.monotonic()
        await worker.stop(1.2)
        assert time.monotonic() - started < 1.2
    finally:
        release.set()
    assert len(fake_platform.requests) == 1  # nothing new started once stopping
    for i in ids:
        row = outbox.rows[i]
        assert (row.status, row.attempts, row.leased_until) == (Status.QUEUED, 0, 0.0)
    assert sorted(row_id for leases in outbox.returned for row_id, _ in leases) == ids


# --- leases, on a virtual clock ------------------------------------------------------------


def on_virtual_clock(test: Callable[[aiohttp.ClientSession], Any]) -> None:
    loop = VirtualClockLoop()
    try:

        async def run() -> None:
            async with aiohttp.ClientSession() as client:
                await asyncio.wait_for(test(client), timeout=3600)  # virtual seconds

        loop.run_until_complete(run())
    finally:
        loop.close()


def test_leases_of_rows_in_hand_are_extended_until_each_is_finished() -> None:
    outbox = FakeOutbox(finish_delay_s=8.0)  # a slow disk: each write-back takes 8 s
    ids = [outbox.put("fake", {"n": i}) for i in range(4)]
    dest = FakeDestination(
        per_request=1,
        settings=settings(batch=Batch(max_events=4, max_wait_ms=0), concurrency=1),
        classify=verdict(Verdict.SENT),
        sends=False,
    )

    async def scenario(session: aiohttp.ClientSession) -> None:
        worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
        assert worker.lease_s == LEASE_MIN_S
        started = asyncio.get_running_loop().time()
        async with running(worker, outbox):
            await eventually(lambda: finals(outbox), within=10)
            assert asyncio.get_running_loop().time() - started > LEASE_MIN_S  # outlived a lease

    on_virtual_clock(scenario)
    assert all(outbox.status(i) is Status.SENT for i in ids)
    # Written back at 8, 16, 24 and 32 s; extended every 10 s: each time the rows still in
    # hand, each under the lease last written (else the outbox refuses the extension).
    assert [[row_id for row_id, _ in leases] for leases, _, _ in outbox.extensions] == [
        ids[1:],
        ids[2:],
        ids[3:],
    ]
    assert all(extended == [i for i, _ in leases] for leases, _, extended in outbox.extensions)
    for (_, until, _), (later, _, _) in itertools.pairwise(outbox.extensions):
        assert {held for _, held in later} == {until}


def test_a_worker_outlives_a_failing_claim() -> None:
    outbox = FakeOutbox(fail_next_claims=2)
    row_id = outbox.put("fake", {"n": 1})
    dest = FakeDestination(classify=verdict(Verdict.SENT), sends=False)

    async def scenario(session: aiohttp.ClientSession) -> None:
        worker = Worker(dest, outbox, session)  # type: ignore[arg-type]
        async with running(worker, outbox):
            await eventually(lambda: outbox.status(row_id) is Status.SENT, within=10)

    on_virtual_clock(scenario)
    assert outbox.fail_next_claims == 0
