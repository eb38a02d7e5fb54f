"""What every component of the shop does alike, written once.

The service's shape: app (the app factory every service is made by), settings (environment),
errors (the JSON envelope), web (middlewares, JSON in and out, request models), identity (the
gateway-signed caller), clients (who a client is, to per-client limits), pagination, openapi,
health, tasks (background loops).
The database: db (the pool), tuning (every performance setting), migrations, bootstrap, and
sqljson (JSON shapes written in SQL).
Events: events (the contract's types and owners), outbox (written with the change, published by
a relay), broker (the RabbitMQ connection), broker_access (each component's rights), consumer,
dlq (the operator's view of dead letters), backoff (reconnecting after an outage).
Running: runner (start and graceful shutdown), server (the one adapter to aiohttp's internals),
operator and metrics (the metrics listener), logs (JSON lines), tracing (OpenTelemetry, off
unless configured), operations (the admin's operations panel: readiness, outbox backlogs,
dead-letter counts).
"""
