"""What an imported process document gets wrong on its own, before it is compared with the
database, and the collection of every problem an import finds (reported together: nothing is
imported unless there is none)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mes.errors import Conflict, InvalidInput
from mes.exchange.schemas import ProcessDocument, RecipeVersionDoc
from mes.recipes import rules as recipe_rules
from mes.recipes.models import RecipeVersionStatus
from mes.routes import rules as route_rules
from mes.routes import service as routes_service
from mes.routes.models import RouteVersionStatus


@dataclass
class Problems:
    """Every problem an import finds: invalid items, and conflicts with what is here."""

    invalid: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)

    def bad(self, item: str, msg: str) -> None:
        self.invalid.append({"item": item, "msg": msg})

    def clash(self, item: str, msg: str) -> None:
        self.conflicts.append({"item": item, "msg": msg})

    def raise_any(self) -> None:
        if self.invalid:
            raise InvalidInput(
                f"the document has {len(self.invalid)} problem(s); nothing was imported",
                code="import.invalid",
                errors=self.invalid + self.conflicts,
            )
        if self.conflicts:
            raise Conflict(
                f"the document conflicts with {len(self.conflicts)} existing definition(s); "
                "nothing was imported",
                code="import.conflict",
                errors=self.conflicts,
            )


def version_body(doc: RecipeVersionDoc) -> dict[str, Any]:
    """A recipe version's body as stored (and checksummed)."""
    return doc.body.model_dump(mode="json")


def check_document(doc: ProcessDocument, problems: Problems) -> None:
    """What the document gets wrong on its own, before it is compared with the database."""
    for kind, codes in (
        ("tool group", [g.code for g in doc.tool_groups]),
        ("product", [p.code for p in doc.products]),
        ("recipe", [r.name for r in doc.recipes]),
        ("route", [r.code for r in doc.routes]),
    ):
        for code in sorted({c for c in codes if codes.count(c) > 1}):
            problems.bad(f"{kind} {code}", "appears more than once")
    for recipe in doc.recipes:
        numbers = [v.version for v in recipe.versions]
        if len(set(numbers)) != len(numbers):
            problems.bad(f"recipe {recipe.name}", "a version number appears more than once")
        for rv in recipe.versions:
            item = f"recipe {recipe.name} v{rv.version}"
            if recipe_rules.body_checksum(version_body(rv)) != rv.checksum:
                problems.bad(item, "the checksum does not match the body (changed or damaged)")
            if rv.status != RecipeVersionStatus.DRAFT and not (rv.approved_by and rv.approved_at):
                problems.bad(item, "an approved or obsolete version needs its approver and time")
    for route in doc.routes:
        numbers = [v.version for v in route.versions]
        if len(set(numbers)) != len(numbers):
            problems.bad(f"route {route.code}", "a version number appears more than once")
        if sum(v.status == RouteVersionStatus.ACTIVE for v in route.versions) > 1:
            problems.bad(f"route {route.code}", "more than one active version")
        if sum(v.status == RouteVersionStatus.PENDING for v in route.versions) > 1:
            problems.bad(f"route {route.code}", "more than one pending version")
        for v in route.versions:
            item = f"route {route.code} v{v.version}"
            signed = v.status != RouteVersionStatus.DRAFT
            if signed and not (v.activated_at and v.activated_by and v.effective_at):
                problems.bad(item, "a signed version needs its activation and effective time")
            shapes = [routes_service.shape(s) for s in v.steps]
            for p in route_rules.route_problems(shapes, for_activation=signed):
                where = f" step {p.sequence}" if p.sequence is not None else ""
                problems.bad(item + where, p.message)
