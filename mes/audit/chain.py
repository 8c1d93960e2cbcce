"""The audit hash chain: how records are linked and how a chain is verified.

Writers never touch the chain, so concurrent transactions stay concurrent. A sealer, holding
one lock, takes committed records that are not yet linked and links them in the order it reads
them: record n carries ``hash = SHA-256(prev_hash, canonical content)``, with ``prev_hash`` the hash
of record n-1 (a fixed genesis value for the first), and the single head row remembers the last.

What this guarantees: once a record is sealed (within about one seal interval of its commit),
editing any of its fields, deleting it, inserting a forged record into the sealed part, or
cutting off the tail is detected by ``verify`` and named. A record is not protected between its
commit and its sealing, and someone who can rewrite the whole chain and the head together can
forge history: export the head hash (``mes audit verify`` prints it) to a separate system to
close that gap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

# Content covered by a record's hash, in addition to prev_hash.
CHAINED_FIELDS = (
    "id",
    "chain_seq",
    "occurred_at",
    "actor",
    "role",
    "operation",
    "action",
    "target_type",
    "target_id",
    "fab_id",
    "before",
    "after",
    "reason",
    "signature_meaning",
    "signature_method",
    "request_id",
)


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    content = {name: _normalise(record[name]) for name in CHAINED_FIELDS}
    canonical = json.dumps(
        {"prev": prev_hash, "content": content},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    record_id: int | None
    chain_seq: int | None
    message: str


@dataclass
class ChainVerifier:
    """Feed sealed records in chain order; collect every inconsistency."""

    problems: list[ChainProblem] = field(default_factory=list)
    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    _last_id: int | None = None

    def feed(self, record: Mapping[str, Any]) -> None:
        seq = int(record["chain_seq"])
        rid = int(record["id"])
        if seq != self.last_seq + 1:
            gap = (
                f"{self.last_seq + 1}"
                if seq == self.last_seq + 2
                else (f"{self.last_seq + 1}..{seq - 1}")
            )
            message = f"chain_seq {gap} missing (deleted) before record id={rid}"
            self.problems.append(ChainProblem(rid, seq, message))
        if record["prev_hash"] != self.last_hash:
            self.problems.append(
                ChainProblem(rid, seq, f"record id={rid} does not link to its predecessor")
            )
        if record_hash(str(record["prev_hash"]), record) != record["hash"]:
            self.problems.append(
                ChainProblem(
                    rid, seq, f"record id={rid} (chain_seq {seq}) was altered after sealing"
                )
            )
        self.checked += 1
        self.last_seq = seq
        self.last_hash = str(record["hash"])
        self._last_id = rid

    def finish(self, head_seq: int | None, head_hash: str | None) -> list[ChainProblem]:
        if head_seq is None:
            if self.checked:
                self.problems.append(ChainProblem(None, None, "sealed records exist but no head"))
        elif head_seq != self.last_seq or head_hash != self.last_hash:
            self.problems.append(
                ChainProblem(
                    self._last_id,
                    self.last_seq,
                    f"the head names chain_seq {head_seq} but the chain ends at {self.last_seq}:"
                    " records at the end were deleted or the head was changed",
                )
            )
        return self.problems
