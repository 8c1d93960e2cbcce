"""Versioned routes of products (the ordered steps a lot runs through)."""
