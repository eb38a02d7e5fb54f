from pydantic import Field

from shopkit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    port: int = 8082
    metrics_port: int = 9082
    # Orders one user may have in `placed` at once: stock cannot be hoarded by orders nobody
    # means to take further.
    max_open_orders_per_user: int = Field(default=10, ge=1)
    # An order still `placed` this long after it was placed is cancelled by the system, and
    # its stock goes back; the sweep looks for such orders this often.
    placed_order_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    placed_order_sweep_interval_seconds: float = Field(default=60.0, gt=0)
