"""Products (device types): what lots are started as, what routes and recipe contexts name."""
