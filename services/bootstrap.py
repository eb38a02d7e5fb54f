"""`python -m services.bootstrap`: creates the database, each service's role and schema,
applies every service's migrations, and declares every consumer's queues in RabbitMQ.
Reads ADMIN_DATABASE_URL, <SERVICE>_DATABASE_URL and RABBITMQ_URL."""

import asyncio
import sys

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from services.notifications.app import MIGRATIONS as NOTIFICATIONS_MIGRATIONS
from services.notifications.handlers import SUBSCRIPTION as NOTIFICATIONS_SUBSCRIPTION
from services.orders.app import MIGRATIONS as ORDERS_MIGRATIONS
from services.tracking.app import MIGRATIONS as TRACKING_MIGRATIONS
from services.tracking.handlers import SUBSCRIPTION as TRACKING_SUBSCRIPTION
from shopkit.bootstrap import ServiceDatabase, bootstrap
from shopkit.consumer import declare_all
from shopkit.logs import configure_logging

SUBSCRIPTIONS = [TRACKING_SUBSCRIPTION, NOTIFICATIONS_SUBSCRIPTION]


class BootstrapSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    admin_database_url: SecretStr
    auth_database_url: SecretStr
    orders_database_url: SecretStr
    tracking_database_url: SecretStr
    notifications_database_url: SecretStr
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")

    def services(self) -> list[ServiceDatabase]:
        return [
            ServiceDatabase("auth", self.auth_database_url.get_secret_value(), AUTH_MIGRATIONS),
            ServiceDatabase(
                "orders", self.orders_database_url.get_secret_value(), ORDERS_MIGRATIONS
            ),
            ServiceDatabase(
                "tracking", self.tracking_database_url.get_secret_value(), TRACKING_MIGRATIONS
            ),
            ServiceDatabase(
                "notifications",
                self.notifications_database_url.get_secret_value(),
                NOTIFICATIONS_MIGRATIONS,
            ),
        ]


def main() -> int:
    configure_logging("bootstrap")
    settings = BootstrapSettings()
    asyncio.run(bootstrap(settings.admin_database_url.get_secret_value(), settings.services()))
    asyncio.run(declare_all(settings.rabbitmq_url.get_secret_value(), SUBSCRIPTIONS))
    print("ready: database roles, schemas and migrations; event queues")
    return 0


if __name__ == "__main__":
    sys.exit(main())
