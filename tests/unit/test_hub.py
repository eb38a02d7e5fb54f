"""The notification hub's own rules: a stream that cannot hold a push ends, and delivery
outlives whatever a read of the notices' rows runs into."""

import asyncio
import contextlib
import uuid

from services.notifications.hub import PUSHES_HELD, Hub, Stream
from services.notifications.queries import NEW_NOTIFICATION_CHANNEL


def test_a_stream_that_cannot_hold_another_push_ends() -> None:
    stream = Stream(session_id=None)
    for n in range(PUSHES_HELD):
        stream.push({"id": str(n)})
    assert not stream.ended.is_set()
    stream.push({"id": "one too many"})
    assert stream.ended.is_set(), "it ends (its client resumes) rather than lose a push"


async def test_delivery_outlives_a_failed_read_and_ends_the_streams_concerned() -> None:
    """Notices whose rows cannot be read (here: the hub lost its connection) end the streams
    they concern, which resume; delivery goes on with the next notices."""
    hub = Hub(settings=None, ceiling=10)  # type: ignore[arg-type]  # (never connects here)
    user = uuid.uuid4()
    delivering = asyncio.create_task(hub.deliver())
    try:
        async with hub.subscribe(user, None) as first, hub.subscribe(user, None) as second:
            hub.receive(NEW_NOTIFICATION_CHANNEL, f"{user}:{uuid.uuid4()}")
            async with asyncio.timeout(5):
                await first.ended.wait()
            assert second.ended.is_set()
            async with hub.subscribe(user, None) as third:
                hub.receive(NEW_NOTIFICATION_CHANNEL, f"{user}:{uuid.uuid4()}")
                async with asyncio.timeout(5):
                    await third.ended.wait()  # still delivering after the failure
        assert not delivering.done()
    finally:
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering
