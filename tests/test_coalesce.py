"""``app.platform.coalesce``: items submitted together share a call, each gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from app.platform.coalesce import Coalescer


class Recorder:
    """A ``run`` that records the groups it was called with and how many ran at once."""

    def __init__(self, pause: float = 0.02, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.pause = pause
        self.fail = fail

    async def run(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.pause)
            if self.fail:
                raise RuntimeError("the statement failed")
            return [item * 10 for item in items]
        finally:
            self.running -= 1


async def test_a_lone_item_runs_at_once_and_alone() -> None:
    recorder = Recorder(pause=0)
    together = Coalescer(recorder.run, lanes=2, most=8)
    assert await together.submit(1) == 10
    assert await together.submit(2) == 20
    assert recorder.calls == [[1], [2]]


async def test_items_arriving_while_the_lanes_are_busy_share_a_call_and_get_their_own_results() -> (
    None
):
    recorder = Recorder()
    together = Coalescer(recorder.run, lanes=2, most=100)
    results = await asyncio.gather(*(together.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    # The first two ran alone, at once; everything else waited and went in groups.
    assert recorder.calls[:2] == [[0], [1]]
    assert len(recorder.calls) < 50 and recorder.most_at_once == 2
    assert sorted(i for call in recorder.calls for i in call) == list(range(50))
    # First come, first served.
    assert [i for call in recorder.calls for i in call] == list(range(50))


async def test_a_call_takes_at_most_the_limit_of_items() -> None:
    recorder = Recorder()
    together = Coalescer(recorder.run, lanes=1, most=5)
    await asyncio.gather(*(together.submit(i) for i in range(23)))
    assert max(len(call) for call in recorder.calls) == 5
    assert recorder.most_at_once == 1


async def test_a_failed_call_fails_every_item_in_it_and_the_next_call_runs() -> None:
    recorder = Recorder(fail=True)
    together = Coalescer(recorder.run, lanes=1, most=10)
    outcomes = await asyncio.gather(*(together.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    recorder.fail = False
    assert await together.submit(7) == 70


async def test_a_submitter_that_stops_waiting_does_not_stop_the_others() -> None:
    recorder = Recorder(pause=0.05)
    together = Coalescer(recorder.run, lanes=1, most=10)
    first = asyncio.create_task(together.submit(0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(together.submit(1))
    stays = asyncio.create_task(together.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 0 and await stays == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    # The group the gone submitter was in still ran, with it.
    assert recorder.calls == [[0], [1, 2]]
