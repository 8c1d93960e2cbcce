"""Fabs (sites), their areas, and the tool groups (capabilities) that tools provide."""
