"""Accounts, sessions and sign-in: the only service that knows passwords and tokens."""
