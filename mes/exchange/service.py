"""Export and import of process definitions (format ``mes-process/1``, see schemas.py).

Import copies definitions *exactly*: approved recipe versions keep their authors, approvers and
checksums, route versions their status and effective times, so a fab that imports a process
runs what the source fab approved (copy-exact). That is why rows are written here directly
rather than through the recipe and route services, whose job is to stamp *local* approvals.
Import is all-or-nothing: every problem in the document is collected first and reported
together; anything refused rolls the whole import back (it runs in one transaction).

Re-importing what is already there changes nothing (idempotent), so a fab can keep its process
definitions in version control and import the file after every change. A version that exists
on both sides with different content is a conflict, never overwritten.

Export is in ``export``, import in ``importer`` (with the document's own checks in
``validation``); this module is the package's face.
"""

from __future__ import annotations

from mes.exchange.export import export
from mes.exchange.importer import import_document

__all__ = ["export", "import_document"]
