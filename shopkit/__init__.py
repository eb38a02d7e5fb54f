"""What every component of the shop does alike, written once.

settings (environment), errors (the JSON envelope), web (middlewares, JSON in/out, app factory),
identity (the gateway-signed caller identity), db (pool and migrations), broker (RabbitMQ publish),
health, logs and runner (process start and graceful shutdown).
"""
