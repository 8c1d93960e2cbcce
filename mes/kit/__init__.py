"""Helpers with no domain logic: pagination, path parameters, lookups."""
