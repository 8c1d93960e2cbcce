"""The operator web console (``/console``): server-rendered pages, htmx fragments, live updates.

Thin: pages read through the domains' queries, and actions call the same service functions as the
API, under the same permissions, audit context, idempotency and e-signature rules.
"""
