"""`python -m services.bootstrap`: creates the database, each service's role and schema,
applies every service's migrations; makes each component's RabbitMQ user with its rights, and
declares every consumer's queues. Reads ADMIN_DATABASE_URL, <SERVICE>_DATABASE_URL,
RABBITMQ_URL (the broker's administrator), <COMPONENT>_RABBITMQ_URL and, optionally,
RABBITMQ_MANAGEMENT_URL."""

import asyncio
import sys

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from services.notifications.app import MIGRATIONS as NOTIFICATIONS_MIGRATIONS
from services.notifications.handlers import SUBSCRIPTION as NOTIFICATIONS_SUBSCRIPTION
from services.orders.app import MIGRATIONS as ORDERS_MIGRATIONS
from services.tracking.app import MIGRATIONS as TRACKING_MIGRATIONS
from services.tracking.handlers import SUBSCRIPTION as TRACKING_SUBSCRIPTION
from shopkit.bootstrap import ServiceDatabase, bootstrap
from shopkit.broker_access import (
    BrokerUser,
    ensure_users,
    ensure_vhost,
    gateway_access,
    management_url_for,
    service_access,
    vhost_of,
)
from shopkit.logs import configure_logging
from shopkit.settings import READING
from shopkit.topology import declare_all

SUBSCRIPTIONS = [TRACKING_SUBSCRIPTION, NOTIFICATIONS_SUBSCRIPTION]
SUBSCRIPTIONS_OF = {
    "auth": [], "orders": [], "tracking": [TRACKING_SUBSCRIPTION],
    "notifications": [NOTIFICATIONS_SUBSCRIPTION],
}


class BootstrapSettings(BaseSettings):
    model_config = READING

    admin_database_url: SecretStr
    auth_database_url: SecretStr
    orders_database_url: SecretStr
    tracking_database_url: SecretStr
    notifications_database_url: SecretStr
    # The broker's administrator: declares the queues and makes the users below.
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Where the management API is; by default beside rabbitmq_url, with its credentials.
    rabbitmq_management_url: SecretStr | None = None
    # Each component's own user, made with the rights it needs (shopkit.broker_access).
    auth_rabbitmq_url: SecretStr
    orders_rabbitmq_url: SecretStr
    tracking_rabbitmq_url: SecretStr
    notifications_rabbitmq_url: SecretStr
    gateway_rabbitmq_url: SecretStr

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

    def broker_users(self) -> list[BrokerUser]:
        urls = {
            "auth": self.auth_rabbitmq_url, "orders": self.orders_rabbitmq_url,
            "tracking": self.tracking_rabbitmq_url,
            "notifications": self.notifications_rabbitmq_url,
        }
        users = [
            BrokerUser.from_url(
                url.get_secret_value(), service_access(name, SUBSCRIPTIONS_OF[name])
            )
            for name, url in urls.items()
        ]
        return [*users, BrokerUser.from_url(self.gateway_rabbitmq_url.get_secret_value(),
                                            gateway_access())]

    @property
    def management_url(self) -> str:
        if self.rabbitmq_management_url is not None:
            return self.rabbitmq_management_url.get_secret_value()
        return management_url_for(self.rabbitmq_url.get_secret_value())


async def set_up_broker(settings: BootstrapSettings) -> None:
    """The virtual host, every consumer's queues, then every component's user with its
    rights."""
    admin_url = settings.rabbitmq_url.get_secret_value()
    await ensure_vhost(settings.management_url, vhost_of(admin_url))
    await declare_all(admin_url, SUBSCRIPTIONS)
    await ensure_users(settings.management_url, vhost_of(admin_url), settings.broker_users())


def main() -> int:
    configure_logging("bootstrap")
    settings = BootstrapSettings()
    asyncio.run(bootstrap(settings.admin_database_url.get_secret_value(), settings.services()))
    asyncio.run(set_up_broker(settings))
    print("ready: database roles, schemas and migrations; event queues and broker users")
    return 0


if __name__ == "__main__":
    sys.exit(main())
