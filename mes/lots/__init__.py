"""Lots and wafers (ISA-95 material lots and sublots) and their append-only history."""
