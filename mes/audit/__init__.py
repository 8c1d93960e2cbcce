"""The audit trail: every change to the database, who made it and why, in a hash chain."""
