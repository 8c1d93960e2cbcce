"""Equipment jobs: the MES's record of each job order sent to a tool (SEMI E94-like)."""
