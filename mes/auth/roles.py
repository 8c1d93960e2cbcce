"""Roles and what each operation requires.

One table, read by the route guards, the manual and the role-matrix test, so that the rule an
operator reads is the rule the service enforces. Roles do not inherit from one another: an
administrator manages accounts but does not approve recipes unless also given the engineer role
(separation of duties, as GMP-style audits expect).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Role(enum.StrEnum):
    OPERATOR = "operator"
    ENGINEER = "engineer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    # Service accounts (machines, not people): they authenticate with API tokens only.
    EQUIPMENT = "equipment"
    DISPATCHER = "dispatcher"


HUMAN_ROLES = frozenset({Role.OPERATOR, Role.ENGINEER, Role.SUPERVISOR, Role.ADMIN})
SERVICE_ROLES = frozenset({Role.EQUIPMENT, Role.DISPATCHER})


@dataclass(frozen=True)
class Permission:
    name: str
    roles: frozenset[Role]
    description: str
    # Sensitive operations need an e-signature: password again (or a fresh login) and a reason.
    signature: bool = False


def _p(
    name: str, roles: Iterable[Role], description: str, *, signature: bool = False
) -> Permission:
    return Permission(name, frozenset(roles), description, signature)


OP, E, S, A = Role.OPERATOR, Role.ENGINEER, Role.SUPERVISOR, Role.ADMIN

FAB_WRITE = _p("fab.write", [A], "create and change fabs and areas")
TOOL_GROUP_WRITE = _p("tool_group.write", [E, A], "define and rename tool groups")
EQUIPMENT_WRITE = _p("equipment.write", [E, A], "install tools, change their master data")
EQUIPMENT_STATE = _p(
    "equipment.state", [OP, E, S, Role.EQUIPMENT], "put a tool or chamber into an E10 state"
)
EQUIPMENT_SUBSTATE = _p("equipment.substate", [E, A], "add and retire E10 substates (reason codes)")
EQUIPMENT_CORRECT = _p(
    "equipment.correct", [E, S], "re-qualify past tool time (a correction, never an edit)"
)
PM_PLAN = _p("pm.plan", [E], "define preventive-maintenance plans")
PM_PERFORM = _p("pm.perform", [OP, E, S], "start and complete preventive maintenance")
DURABLE_WRITE = _p("durable.write", [E, S, A], "register reticles and probe cards, hold, retire")
DURABLE_MOVE = _p(
    "durable.move", [OP, E, S, Role.EQUIPMENT], "move reticles and probe cards, clean carriers"
)
PRODUCT_WRITE = _p("product.write", [E], "define and change products")
ROUTE_WRITE = _p("route.write", [E], "create routes and edit draft versions")
ROUTE_ACTIVATE = _p("route.activate", [E], "activate a route version", signature=True)
RECIPE_WRITE = _p(
    "recipe.write",
    [E],
    "create recipes, edit draft versions, context rules and parameter schemas",
)
RECIPE_APPROVE = _p(
    "recipe.approve", [E], "approve a recipe version (not its author's)", signature=True
)
RECIPE_QUALIFY = _p("recipe.qualify", [E], "qualify a recipe version on a tool")
RECIPE_DISQUALIFY = _p(
    "recipe.disqualify", [E, S], "withdraw a tool's qualification (stops track-in at once)"
)
RECIPE_OBSOLETE = _p("recipe.obsolete", [E], "retire an approved recipe version", signature=True)
PROCESS_IMPORT = _p(
    "process.import",
    [E],
    "import routes, recipes, context rules and qualifications (copy-exact)",
    signature=True,
)
EDC_WRITE = _p("edc.write", [E], "create data collection plans and edit draft versions")
EDC_APPROVE = _p(
    "edc.approve", [E], "approve a data collection plan version (not its author's)", signature=True
)
EDC_OBSOLETE = _p(
    "edc.obsolete", [E], "retire an approved data collection plan version", signature=True
)
SPC_CHART = _p("spc.chart", [E], "define SPC charts, switch their rules and actions, set limits")
SPC_ACKNOWLEDGE = _p(
    "spc.acknowledge", [E, S], "acknowledge an SPC violation (OCAP closure), release its tool"
)
CARRIER_WRITE = _p("carrier.write", [S, A], "register carriers")
CARRIER_MOVE = _p(
    "carrier.move",
    [OP, E, S, Role.EQUIPMENT],
    "move carriers between stockers and load ports; load and unload ports",
)
LOAD_PORT_SERVICE = _p("load_port.service", [E, S], "take load ports out of service and back")
SORTER_RUN = _p(
    "sorter.run", [OP, E, S], "put lots into carriers; sorter jobs (re-slot, split, merge)"
)
USER_ADMIN = _p("user.admin", [A], "create users, change roles, enable/disable", signature=True)
USER_CERTIFY = _p("user.certify", [S, A], "certify operators for tool groups", signature=True)
TOKEN_ADMIN = _p("token.admin", [A], "issue and revoke API tokens for service accounts")
AUDIT_READ = _p("audit.read", [S, A], "read the audit trail")
LOT_START = _p("lot.start", [E, S], "start (release) lots")
START_PLAN_WRITE = _p(
    "start_plan.write", [E, S], "define and change start plans (release planning)"
)
LOT_MOVE = _p("lot.move", [OP, E, S, Role.EQUIPMENT], "track lots in and out of tools")
LOT_HOLD = _p("lot.hold", [OP, E, S, Role.EQUIPMENT], "hold lots, mass holds, future holds")
LOT_RELEASE = _p(
    "lot.release", [OP, E, S], "release holds (the hold code names the role)", signature=True
)
LOT_SPLIT = _p("lot.split", [OP, E, S], "split and merge lots")
LOT_SCRAP = _p("lot.scrap", [OP, E, S], "scrap wafers", signature=True)
LOT_BONUS = _p("lot.bonus", [E, S], "add wafers to a lot")
LOT_JUMP = _p("lot.jump", [E], "move a lot to another step (skip / jump)", signature=True)
LOT_PRIORITY = _p("lot.priority", [E, S], "change priority class and due date")
LOT_TYPE = _p(
    "lot.type", [E, S], "change a lot's type (production, engineering, monitor …)", signature=True
)
LOT_TERMINATE = _p("lot.terminate", [E, S], "terminate a lot", signature=True)
LOT_CANCEL_TRACK_IN = _p(
    "lot.cancel_track_in",
    [S],
    "undo a track-in made by mistake (nothing processed)",
    signature=True,
)
LOT_TRANSFER = _p("lot.transfer", [OP, S], "ship lots to another fab and receive them")
DISPATCH_RULES = _p(
    "dispatch.rules",
    [E],
    "publish dispatching rule sets, setup and transfer-time data; run what-if simulations",
)
DISPATCH_SEND = _p(
    "dispatch.send",
    [OP, S, Role.DISPATCHER],
    "send a lot to the fab where-next proposes (an inter-fab transfer)",
)
HOLD_CODE_ADMIN = _p("hold_code.admin", [S, A], "define hold codes and their release role")
ACCOUNT_SELF = _p("account.self", HUMAN_ROLES, "change one's own password")

ALL_PERMISSIONS: tuple[Permission, ...] = (
    FAB_WRITE,
    TOOL_GROUP_WRITE,
    EQUIPMENT_WRITE,
    EQUIPMENT_STATE,
    EQUIPMENT_SUBSTATE,
    EQUIPMENT_CORRECT,
    PM_PLAN,
    PM_PERFORM,
    DURABLE_WRITE,
    DURABLE_MOVE,
    PRODUCT_WRITE,
    ROUTE_WRITE,
    ROUTE_ACTIVATE,
    RECIPE_WRITE,
    RECIPE_APPROVE,
    RECIPE_QUALIFY,
    RECIPE_DISQUALIFY,
    RECIPE_OBSOLETE,
    PROCESS_IMPORT,
    EDC_WRITE,
    EDC_APPROVE,
    EDC_OBSOLETE,
    SPC_CHART,
    SPC_ACKNOWLEDGE,
    CARRIER_WRITE,
    CARRIER_MOVE,
    LOAD_PORT_SERVICE,
    SORTER_RUN,
    USER_ADMIN,
    USER_CERTIFY,
    TOKEN_ADMIN,
    AUDIT_READ,
    ACCOUNT_SELF,
    LOT_START,
    START_PLAN_WRITE,
    LOT_MOVE,
    LOT_HOLD,
    LOT_RELEASE,
    LOT_SPLIT,
    LOT_SCRAP,
    LOT_BONUS,
    LOT_JUMP,
    LOT_PRIORITY,
    LOT_TYPE,
    LOT_TERMINATE,
    LOT_CANCEL_TRACK_IN,
    LOT_TRANSFER,
    HOLD_CODE_ADMIN,
    DISPATCH_RULES,
    DISPATCH_SEND,
)


def acting_role(held: Iterable[Role], permission: Permission) -> Role | None:
    """The role under which a holder of ``held`` may perform ``permission`` (None: refused).

    Deterministic (first in the Role enum's order), so the audit trail names a stable role.
    """
    granted = set(held) & permission.roles
    return next((r for r in Role if r in granted), None)


def markdown_matrix() -> str:
    """The permission x role table as Markdown (docs/security.md holds a copy; a test compares)."""
    header = "| operation | e-signature | " + " | ".join(r.value for r in Role) + " |"
    rule = "|---|---|" + "---|" * len(Role)
    rows = [
        f"| `{p.name}`: {p.description} | {'yes' if p.signature else ''} | "
        + " | ".join("✔" if r in p.roles else "" for r in Role)
        + " |"
        for p in ALL_PERMISSIONS
    ]
    return "\n".join([header, rule, *rows])
