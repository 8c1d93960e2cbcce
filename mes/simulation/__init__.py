"""Discrete-event fab simulator: an SMT2020-format testbed (``mes.smt2020.tables``) run on
simulated time, every dispatch decision made by the production policy (``mes.dispatch.policy``)
on the snapshot types production builds. Pure Python, no database (docs/simulation.md)."""
