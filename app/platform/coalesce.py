"""Group commit in the application: items submitted at the same time share one statement.

``Coalescer(run, lanes, most)`` calls ``run(items)`` for the items submitted to it. At most
``lanes`` calls are under way at once; an item submitted while every lane is busy waits, and the
next free lane takes every waiting item (up to ``most``) in one call. So under light load each
item runs at once and alone (nothing waits for company), and under load the per-statement costs
of PostgreSQL (executor start, the commit's WAL flush, triggers) and of the round trip are shared
by the items of a call (``bench/NOTES.md``).

Guarantees:
- ``submit`` returns the result ``run`` gave for its own item (results are matched by position),
  or raises what ``run`` raised: a call succeeds or fails as a whole, like one statement;
- items are taken first come, first served;
- a submitter that stops waiting (a client gone) does not stop the call its item is in, which
  completes for the others, as a single statement already sent would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], lanes: int, most: int) -> None:
        assert lanes >= 1 and most >= 1
        self._run = run
        self._lanes = lanes
        self._most = most
        self._busy = 0
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done (asyncio's advice)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_calls()
        return await future

    def _start_calls(self) -> None:
        while self._waiting and self._busy < self._lanes:
            batch = self._waiting[: self._most]
            del self._waiting[: self._most]
            self._busy += 1
            task = asyncio.create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:  # the process is stopping
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the submitters get it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy -= 1
            self._start_calls()
