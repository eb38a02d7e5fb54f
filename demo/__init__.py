"""`make demo`: the system of `make run`, seeded through its public API with a sample
catalogue, a demo admin and a demo shopper whose first order is on its way (demo/seed.py), so
a newcomer can click through the shop at once. `python -m demo` runs it (demo/__main__.py)."""
