"""Process tools, their chambers and load ports, and their SEMI E10 state history."""
