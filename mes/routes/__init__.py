"""Products and their versioned routes (the ordered steps a lot runs through)."""
