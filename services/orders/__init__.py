"""Addresses, products and stock, and orders."""
