"""Addresses: CRUD plus `/default`, with exactly one default per user who has any."""
