"""Fab MES: lots, routes, recipes and equipment of a network of semiconductor fabs."""

__version__ = "0.1.0"
