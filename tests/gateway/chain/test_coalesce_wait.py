"""Waiting for a request's own flight alone (`coalesce._wait_one`): what `asyncio.wait`
did for it: back when the flight ends or the deadline comes, the flight never cancelled."""

from __future__ import annotations

import asyncio

import pytest

from gateway.chain.coalesce import _wait_one


async def test_returns_when_the_task_ends() -> None:
    task = asyncio.ensure_future(asyncio.sleep(0, result="done"))
    await _wait_one(task, 60.0)
    assert task.done() and task.result() == "done"


async def test_returns_at_the_deadline_leaving_the_task_running() -> None:
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    await _wait_one(task, 0.0)
    assert not task.done()  # the deadline came first; the flight goes on for others
    gate.set()
    assert await task is True


async def test_a_cancelled_caller_leaves_the_task_running() -> None:
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    caller = asyncio.ensure_future(_wait_one(task, 60.0))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not task.cancelled() and not task.done()
    gate.set()
    assert await task is True


async def test_a_failed_task_ends_the_wait_and_keeps_its_error() -> None:
    async def fail() -> None:
        raise RuntimeError("upstream down")

    task = asyncio.ensure_future(fail())
    await _wait_one(task, 60.0)
    with pytest.raises(RuntimeError, match="upstream down"):
        task.result()


async def test_leaves_no_callback_on_the_task() -> None:
    gate = asyncio.Event()
    task = asyncio.ensure_future(gate.wait())
    woken: list[object] = []
    task.add_done_callback(woken.append)
    await _wait_one(task, 0.0)
    # Only the test's own callback is left: removing it leaves none.
    assert task.remove_done_callback(woken.append) == 1
    assert task.remove_done_callback(woken.append) == 0
    gate.set()
    await task
