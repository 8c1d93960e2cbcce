"""Example data: a small two-fab network that the demo and the tests start from."""
