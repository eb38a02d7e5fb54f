"""`python -m services.bootstrap`: creates the database, each service's role and schema, and
applies every service's migrations. Reads ADMIN_DATABASE_URL and <SERVICE>_DATABASE_URL."""

import asyncio
import sys

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from services.notifications.app import MIGRATIONS as NOTIFICATIONS_MIGRATIONS
from services.orders.app import MIGRATIONS as ORDERS_MIGRATIONS
from services.tracking.app import MIGRATIONS as TRACKING_MIGRATIONS
from shopkit.bootstrap import ServiceDatabase, bootstrap
from shopkit.logs import configure_logging


class BootstrapSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    admin_database_url: SecretStr
    auth_database_url: SecretStr
    orders_database_url: SecretStr
    tracking_database_url: SecretStr
    notifications_database_url: SecretStr

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
    print("database ready: roles, schemas and migrations in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
