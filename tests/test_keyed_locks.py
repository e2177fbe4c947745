"""KeyedLocks: holders of one key take turns in arrival order; other keys do not wait; nothing is kept."""

from __future__ import annotations

import asyncio

from taskql.keyed_locks import KeyedLocks


async def test_holders_of_one_key_take_turns_in_order_and_nothing_is_kept() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(hold("a", "first"), hold("a", "second"), hold("b", "other"), hold("a", "third"))

    assert [step for step in order if not step.startswith("other")] == [
        "first in", "first out", "second in", "second out", "third in", "third out"
    ]  # fmt: skip
    assert order.index("other in") < order.index("first out")  # another key does not wait
    assert len(locks) == 0


async def test_a_holder_is_told_whether_someone_held_or_awaited_the_key_before_it() -> None:
    locks = KeyedLocks()
    told: dict[str, bool] = {}

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key) as waited:
            told[name] = waited
            await asyncio.sleep(0.01)

    await asyncio.gather(hold("a", "first"), hold("a", "second"), hold("b", "other"))
    async with locks.hold("a") as later:
        pass

    assert told == {"first": False, "second": True, "other": False}
    assert later is False  # the others had left: what it read before cannot have been overtaken here
