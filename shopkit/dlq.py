"""The dead-letter queues, for an operator: `python -m services.<name> dlq` shows the counts of
the service's DLQs; `... dlq requeue` moves their messages back for another try. Reads
RABBITMQ_URL only: the broker's administrator (only it may write into a queue by its name)."""

import asyncio
import contextlib

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from shopkit.broker import connect_to_a_node, count_messages
from shopkit.consumer import REASON_HEADER, RETRIES_HEADER, Subscription, copy_of
from shopkit.settings import READING


class BrokerSettings(BaseSettings):
    model_config = READING

    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")


async def dead_letter_counts(url: str, queues: list[str]) -> dict[str, int]:
    """How many messages wait in each queue's DLQ."""
    connection = await connect_to_a_node(url, "dlq tool")
    try:
        return {
            f"{queue}.dlq": await count_messages(connection, f"{queue}.dlq") for queue in queues
        }
    finally:
        await connection.close()


async def requeue_dead_letters(url: str, queue: str) -> int:
    """Moves the messages now in `<queue>.dlq` back into `queue` with a fresh retry count.

    Only as many as were there at the start: one that fails again comes back to the DLQ while
    this runs, and must not be moved round and round.
    """
    connection = await connect_to_a_node(url, "dlq tool")
    moved = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        dlq = await channel.declare_queue(f"{queue}.dlq", durable=True, passive=True)
        waiting = dlq.declaration_result.message_count or 0
        while moved < waiting and (message := await dlq.get(fail=False, no_ack=False)):
            headers = {
                k: v for k, v in (message.headers or {}).items()
                if k not in (RETRIES_HEADER, REASON_HEADER, "x-death", "x-delivery-count")
            }
            await channel.default_exchange.publish(copy_of(message, headers), routing_key=queue)
            await message.ack()
            moved += 1
        return moved
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def main(subscriptions: list[Subscription], argv: list[str]) -> int:
    url = BrokerSettings().rabbitmq_url.get_secret_value()
    queues = [s.queue for s in subscriptions]
    if argv == []:
        for dlq, count in asyncio.run(dead_letter_counts(url, queues)).items():
            print(f"{dlq}: {count}")
        return 0
    if argv == ["requeue"]:
        for queue in queues:
            moved = asyncio.run(requeue_dead_letters(url, queue))
            print(f"{queue}.dlq: {moved} moved back to {queue}")
        return 0
    print("usage: python -m services.<name> dlq [requeue]")
    return 2
