"""A publisher process for the no-loss tests: numbered messages through a durable outbox.

    python tests/integration/mqtt_publisher.py URL STORE TOPIC COUNT

Message k (0 <= k < 2 * COUNT) goes to TOPIC/q1 at QoS 1 when k is even and to TOPIC/q2
at QoS 2 when k is odd, with payload str(k // 2). After a crash it starts again at the
outbox's sequence: every message before it is in the outbox or was delivered. It prints
"done" once every message is acknowledged.
"""

from __future__ import annotations

import asyncio
import sys

from tether.mqtt import Client


async def main(url: str, store: str, topic: str, count: int) -> None:
    client = Client(
        url,
        client_id="no-loss-publisher",
        store=store,
        clean_start=False,
        session_expiry=3600,
        backoff_min=0.05,
        backoff_max=0.5,
    )
    async with client:
        assert client.store is not None
        start = client.store.sequence
        print(f"start {start}", flush=True)
        window = asyncio.Semaphore(500)
        tasks: set[asyncio.Task[int]] = set()

        async def one(k: int) -> int:
            try:
                qos = 1 if k % 2 == 0 else 2
                return await client.publish(f"{topic}/q{qos}", str(k // 2).encode(), qos)
            finally:
                window.release()

        for k in range(start, 2 * count):
            await window.acquire()
            task = asyncio.ensure_future(one(k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        # What the previous run left in the outbox completes without a waiting caller.
        for _ in range(6000):
            if not client.session.pending():
                break
            await asyncio.sleep(0.01)
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
