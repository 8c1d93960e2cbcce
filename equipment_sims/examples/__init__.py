"""Example fab descriptions for the simulators."""
