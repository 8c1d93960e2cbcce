"""Invariants of the whole database, checked from the rows (``mes check``, the reliability
suites): wafers conserved, lots at one step and on at most one tool, tools holding what runs on
them, lot histories folding to the lots, jobs live and started once, leases with one owner, the
audit chain intact."""
