"""Retention: pruning the tables that grow forever by design (the dispatch decision log, the
idempotency records, the tools' E10 state events) down to a configured age."""
