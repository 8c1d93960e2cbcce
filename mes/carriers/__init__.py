"""Carriers (FOUPs) and their slot maps, locations and load ports (E87); sorter jobs."""
