"""``python -m mes.cli``: the ``mes`` command."""

from mes.cli import app

app()
