"""Durables: carriers (FOUPs) now; reticles and probe cards come with the equipment issue."""
