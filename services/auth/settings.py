from pydantic import Field, SecretStr, model_validator

from shopkit.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    port: int = 8081
    metrics_port: int = 9081
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # A session unused this long ends too.
    session_idle_seconds: int = Field(default=24 * 3600, ge=60)
    # A session's last use is written at most this often (each write costs a row update).
    session_touch_interval_seconds: int = Field(default=60, ge=1)
    # Live sessions per account; a sign-in past it ends the least recently used one.
    max_sessions_per_user: int = Field(default=20, ge=1)
    session_sweep_interval_seconds: float = Field(default=300.0, gt=0)
    # Failed sign-ins tolerated within the window before a lockout: per account and client
    # address (what one guesser meets), per account from all addresses together (a much higher
    # ceiling, against a distributed guess), and per address over all accounts.
    login_max_failures_per_account_and_address: int = Field(default=10, ge=1)
    login_max_failures_per_account: int = Field(default=100, ge=1)
    login_max_failures_per_address: int = Field(default=100, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Each failure past the limit locks for one step more, up to the cap (Keycloak's shape).
    login_lockout_step_seconds: int = Field(default=60, ge=1)
    login_lockout_max_seconds: int = Field(default=900, ge=1)
    # Registrations per client address within the window.
    registrations_per_address: int = Field(default=20, ge=1)
    registration_window_seconds: int = Field(default=3600, ge=1)
    # argon2id cost, at or above OWASP's floor (m=19 MiB, t=2, p=1).
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes waiting for a worker thread (one per core) beyond those being computed; past it a
    # sign-in, registration or password change is refused with 503 rather than queued.
    password_hash_queue: int = Field(default=16, ge=0)
    # GET /internal/sessions/check, for a front proxy that cannot sign identities itself
    # (nginx auth_request standing in for the gateway, the benchmark's peer): off unless such
    # a proxy stands in for the gateway. Auth then vouches to the services named in
    # FRONT_PROXY_SECRETS (JSON: {"orders": "<orders' identity secret>"}) as the gateway would.
    front_proxy_check: bool = False
    front_proxy_secrets: dict[str, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _vouches_only_as_a_front_proxy(self) -> "AuthSettings":
        if self.front_proxy_secrets and not self.front_proxy_check:
            raise ValueError("FRONT_PROXY_SECRETS is for FRONT_PROXY_CHECK only")
        return self
