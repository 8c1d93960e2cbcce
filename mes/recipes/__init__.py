"""Recipes (versioned process programs) and their qualification on tools."""
