from pydantic import Field

from shopkit.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    port: int = 8081
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    session_sweep_interval_seconds: float = Field(default=300.0, gt=0)
    # Failed sign-ins tolerated within the window before a lockout, per account and per address.
    login_max_failures_per_account: int = Field(default=10, ge=1)
    login_max_failures_per_address: int = Field(default=100, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Each failure past the limit locks for one step more, up to the cap (Keycloak's shape).
    login_lockout_step_seconds: int = Field(default=60, ge=1)
    login_lockout_max_seconds: int = Field(default=900, ge=1)
    # argon2id cost, at or above OWASP's floor (m=19 MiB, t=2, p=1).
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1)
    # GET /internal/sessions/check, for a front proxy that cannot sign identities itself
    # (nginx auth_request): off unless such a proxy stands in for the gateway.
    front_proxy_check: bool = False
