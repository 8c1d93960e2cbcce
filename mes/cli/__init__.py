"""The ``mes`` command (entry point ``mes.cli:app``): administration in ``admin``, the
long-running process roles in ``roles``."""

from mes.cli import roles as _roles  # noqa: F401  # registers serve, adapters, dispatcher
from mes.cli.admin import app, import_smt2020_into

__all__ = ["app", "import_smt2020_into"]
