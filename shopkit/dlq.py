"""`python -m services.<name> dlq` shows the dead-letter counts of the service's queues;
`... dlq requeue` moves their messages back for another try. Reads RABBITMQ_URL only."""

import asyncio

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopkit.consumer import Subscription, dead_letter_counts, requeue_dead_letters


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")


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
