"""In-app notifications of order and delivery changes."""
