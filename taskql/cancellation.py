"""Honouring a cancellation that something swallowed.

On Python 3.11, asyncio.wait_for (which the MongoDB driver awaits for every command) returns its
result instead of raising when the cancel arrives as the operation completes. The task then runs
on with the cancel still requested (`task.cancelling()`). Loops that wait for long, or forever,
check this before they wait again, so that a client leaving or a shutdown still ends them.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
