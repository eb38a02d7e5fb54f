"""The one door clients use: routes to services, checks bearer tokens, vouches for the caller."""
