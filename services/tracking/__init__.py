"""Delivery tracking of orders, fed by order events."""
