"""Recipe body rules: canonical form and checksum.

The checksum is SHA-256 over a canonical JSON form of the body (keys sorted, no insignificant
whitespace, UTF-8), so the same parameters always give the same checksum whatever order or
formatting they arrived in, and the OPC UA adapter can compare it with what a tool reports.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_body(body: dict[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def body_checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_body(body)).hexdigest()
