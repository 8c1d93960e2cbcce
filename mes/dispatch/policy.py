"""Dispatching policy: which lot next on a tool (what-next), which tool next for a lot
(where-next). Pure: plain frozen snapshots in, ranked lists with explanations out, no I/O.

SEMI leaves dispatching to the MES (E94 only orders the control jobs a host creates); this
module follows common fab practice. A decision has two halves:

* **Hard constraints** (``constraints``): a lot is never offered to a tool that cannot legally
  run it. Each failed constraint gives an ``Exclusion`` with a stable code (``lot.on_hold``,
  ``tool.not_qualified``, ``tool.pm_due`` …), the same codes track-in answers with.
* **Ranking rules**: each rule maps (lot, tool, situation) to a value, mostly in [0, 1], and a
  rule set weighs them: ``score = Σ weight * value``. The explanation of a lot's place is the
  list of contributions ``weight * value`` with the rule's own words. A rule whose weight is
  larger than the sum of all lower weights dominates them (lexicographic order by weights):
  the default rule set gives the priority class 1000, so hot lots come first whatever else.
  Ties go to the longest-waiting lot, then the lot code, so a ranking is deterministic.

Times are float seconds since the epoch (UTC): cheaper than datetimes in a loop, and the fab
simulator runs on its own clock. The simulator calls ``rank_lots``/``rank_tools`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# --- snapshots -----------------------------------------------------------------------------

WAITING = "Waiting"
UP_FOR_PRODUCTION = frozenset({"SBY", "PRD"})
ONLINE_REMOTE = "OnlineRemote"
PRIORITY_CLASSES = ("normal", "hot", "super_hot")


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """The step a lot waits at (and what the rules need to know of the route ahead)."""

    id: int
    sequence: int
    tool_group_id: int
    operation: str
    recipe: str | None  # logical recipe; ``LotSnapshot.recipe_by_tool`` holds context overrides
    process_time_s: float = 0.0
    batch_min: int | None = None  # lots; None: not a batch step
    batch_max: int | None = None
    setup: str | None = None  # the setup the tool must be in to run the step
    reticle: str | None = None  # design of the reticle the recipe needs
    # Lens / tool dedication: the step must run on the tool that ran this earlier sequence.
    same_tool_as_sequence: int | None = None


@dataclass(frozen=True, slots=True)
class LotSnapshot:
    id: int
    code: str
    fab_id: int
    state: str  # LotState value
    holds: int
    priority: str  # PriorityClass value
    wafer_count: int
    step: StepSnapshot
    queued_at: float  # arrival at the current step
    due_at: float | None = None
    # Raw process time of this and every later step (SRPT, critical ratio, slack).
    remaining_process_s: float = 0.0
    next_tool_group_id: int | None = None
    # The earliest open Q-time deadline the current step must meet (start before it).
    qtime_deadline: float | None = None
    # The tool the dedication names (from the lot's history), if the step is dedicated.
    dedicated_tool_id: int | None = None
    # Context rules that send the logical recipe to another recipe on some tools.
    recipe_by_tool: Mapping[int, str] | None = None

    def recipe_on(self, tool_id: int) -> str | None:
        if self.recipe_by_tool is not None:
            found = self.recipe_by_tool.get(tool_id)
            if found is not None:
                return found
        return self.step.recipe


@dataclass(frozen=True, slots=True)
class ToolSnapshot:
    id: int
    code: str
    fab_id: int
    tool_group_id: int
    e10_state: str
    control_state: str = ONLINE_REMOTE
    area_id: int | None = None
    chambers_up: int | None = None  # None: not a cluster tool
    max_lots: int = 1
    # (step id, recipe) of each lot on the tool now.
    running: tuple[tuple[int, str | None], ...] = ()
    # Seconds until the tool is free again (remaining time of what runs on it).
    busy_for_s: float = 0.0
    pm_due: bool = False
    # Recipes with an approved version standing-qualified on the tool (or a chamber of it).
    qualified: frozenset[str] = frozenset()
    # Reticle design → uses left (None: no limit) of available copies at the tool.
    reticles: Mapping[str, int | None] = field(default_factory=dict)
    current_setup: str | None = None
    lots_since_setup: int = 0


@dataclass(frozen=True, slots=True)
class GroupLoad:
    """Work waiting for a tool group in one fab, and the tools up to do it."""

    queued_lots: int = 0
    queued_work_s: float = 0.0
    tools_up: int = 0

    @property
    def workload_s(self) -> float:
        """Hours-of-work proxy: queued work per tool up (infinite with no tool up)."""
        if self.tools_up <= 0:
            return math.inf if self.queued_lots else 0.0
        return self.queued_work_s / self.tools_up


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything beside one lot and one tool that a decision looks at."""

    now: float
    # (fab id, tool group id) → load; WIP balancing looks at the next step's group.
    loads: Mapping[tuple[int, int], GroupLoad] = field(default_factory=dict)
    # (from setup or None for "any", to setup) → seconds.
    setup_times: Mapping[tuple[str | None, str], float] = field(default_factory=dict)
    # setup → lots to run after changing over to it before changing again.
    min_run: Mapping[str, int] = field(default_factory=dict)
    # (from fab, to fab) → seconds of transfer.
    transfer_s: Mapping[tuple[int, int], float] = field(default_factory=dict)
    default_transfer_s: float = 4 * 3600.0

    def setup_time(self, current: str | None, wanted: str | None) -> float:
        if wanted is None or current == wanted:
            return 0.0
        found = self.setup_times.get((current, wanted))
        if found is None:
            found = self.setup_times.get((None, wanted), 0.0)
        return found

    def transfer(self, from_fab: int, to_fab: int) -> float:
        if from_fab == to_fab:
            return 0.0
        return self.transfer_s.get((from_fab, to_fab), self.default_transfer_s)


# --- hard constraints ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exclusion:
    code: str
    detail: str


def lot_exclusion(lot: LotSnapshot) -> Exclusion | None:
    """Why the lot cannot be dispatched anywhere now (None: it waits for a tool)."""
    if lot.holds > 0 or lot.state == "OnHold":
        return Exclusion("lot.on_hold", f"lot {lot.code} is on hold")
    if lot.state != WAITING:
        code = {"Running": "lot.running", "InTransit": "lot.in_transit"}.get(
            lot.state, "lot.finished"
        )
        return Exclusion(code, f"lot {lot.code} is {lot.state}")
    return None


def tool_exclusion(tool: ToolSnapshot, *, capacity: bool = True) -> Exclusion | None:
    """Why the tool can take no lot now. ``capacity=False`` ignores that it is busy or not in
    remote control (where-next: the lot can wait for it), not that it is down."""
    if tool.chambers_up == 0:
        return Exclusion("tool.no_chamber_available", f"no chamber of {tool.code} is up")
    if tool.e10_state not in UP_FOR_PRODUCTION:
        return Exclusion("tool.not_available", f"{tool.code} is {tool.e10_state}, not SBY/PRD")
    if tool.pm_due:
        return Exclusion("tool.pm_due", f"{tool.code} is due for preventive maintenance")
    if capacity and tool.control_state != ONLINE_REMOTE:
        return Exclusion("tool.not_remote", f"{tool.code} is {tool.control_state}")
    return None


def pair_exclusion(
    lot: LotSnapshot,
    tool: ToolSnapshot,
    situation: Situation,
    *,
    capacity: bool = True,
    same_fab: bool = True,
    start_in_s: float = 0.0,
) -> Exclusion | None:
    """Why this tool may not run this lot (None: it may). ``start_in_s``: how long before the
    lot could start there (transfer, queue), checked against its Q-time deadline."""
    step = lot.step
    if same_fab and tool.fab_id != lot.fab_id:
        return Exclusion("tool.other_fab", f"{tool.code} is in another fab than lot {lot.code}")
    if tool.tool_group_id != step.tool_group_id:
        return Exclusion("tool.wrong_group", f"{tool.code} is not in the step's tool group")
    recipe = lot.recipe_on(tool.id)
    if recipe is None or recipe not in tool.qualified:
        return Exclusion(
            "tool.not_qualified", f"{tool.code} is not qualified for recipe {recipe or '(none)'}"
        )
    if lot.dedicated_tool_id is not None and lot.dedicated_tool_id != tool.id:
        return Exclusion(
            "lot.dedicated_tool",
            f"step {step.sequence} must run on the tool that ran step {step.same_tool_as_sequence}",
        )
    if step.reticle is not None:
        if step.reticle not in tool.reticles:
            return Exclusion(
                "reticle.not_at_tool", f"no available copy of {step.reticle} at {tool.code}"
            )
        left = tool.reticles[step.reticle]
        if left is not None and left < lot.wafer_count:
            return Exclusion(
                "reticle.over_limit",
                f"{step.reticle} at {tool.code} has {left} uses left, lot needs {lot.wafer_count}",
            )
    if capacity and tool.running:
        if step.batch_max is None:
            if len(tool.running) >= tool.max_lots:
                return Exclusion("tool.full", f"{tool.code} is busy")
        else:
            if any(s != step.id or r != recipe for s, r in tool.running):
                return Exclusion(
                    "tool.batch_mismatch", f"{tool.code} runs a batch of another step or recipe"
                )
            if len(tool.running) >= min(step.batch_max, tool.max_lots):
                return Exclusion("tool.full", f"the batch on {tool.code} is full")
    if lot.qtime_deadline is not None:
        start = situation.now + start_in_s + situation.setup_time(tool.current_setup, step.setup)
        if start > lot.qtime_deadline:
            return Exclusion(
                "lot.qtime_at_risk",
                f"its Q-time window closes {lot.qtime_deadline - situation.now:.0f} s from now, "
                f"before it could start on {tool.code} ({start - situation.now:.0f} s)",
            )
    return None


# --- ranking rules -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A lot a tool could run, with what rules compare across the candidates."""

    lot: LotSnapshot
    tool: ToolSnapshot
    # Compatible lots (same step and recipe) waiting for this tool, this one included.
    batch_peers: int = 1
    # The longest any of those has waited (s).
    batch_oldest_wait_s: float = 0.0
    batch_urgent: bool = False


# A rule's value, and its explanation as a format string with arguments: formatting is most of
# a rule's cost, so it happens only for the lots whose explanation is asked for.
Valued = tuple[float, str, tuple[Any, ...]]
RuleFn = Callable[[Candidate, Situation, Mapping[str, float]], Valued]


@dataclass(frozen=True)
class RuleDef:
    name: str
    fn: RuleFn
    defaults: Mapping[str, float]
    formula: str


def _decay(x: float, scale: float) -> float:
    """1 at x ≤ 0, falling towards 0 as x grows: scale / (scale + x)."""
    return 1.0 if x <= 0 else scale / (scale + x)


def _logistic(x: float, scale: float) -> float:
    """1 / (1 + e^(x/scale)): 0.5 at x = 0, → 1 as x → -∞, → 0 as x → +∞."""
    z = x / scale
    if z > 50:
        return 0.0
    if z < -50:
        return 1.0
    return 1.0 / (1.0 + math.exp(z))


def _priority(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    value = {"super_hot": p["super_hot"], "hot": p["hot"]}.get(c.lot.priority, p["normal"])
    return value, "priority class {}", (c.lot.priority,)


def _fifo(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    wait = max(0.0, s.now - c.lot.queued_at)
    return 1.0 - _decay(wait, p["scale_s"]), "waiting {:.1f} h at the step", (wait / 3600,)


def _flow(c: Candidate, p: Mapping[str, float]) -> float:
    return max(1.0, c.lot.remaining_process_s * p["flow_factor"])


def _critical_ratio(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    ratio = (c.lot.due_at - s.now) / _flow(c, p)
    return _logistic(ratio - 1.0, p["scale"]), "critical ratio {:.2f}", (ratio,)


def _edd(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    left = c.lot.due_at - s.now
    return _logistic(left, p["scale_s"]), "due in {:.1f} d", (left / 86400,)


def _spt(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    t = c.lot.step.process_time_s
    return _decay(t, p["scale_s"]), "process time {:.0f} min", (t / 60,)


def _srpt(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    t = c.lot.remaining_process_s
    return _decay(t, p["scale_s"]), "remaining process time {:.1f} h", (t / 3600,)


def _least_slack(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    slack = c.lot.due_at - s.now - _flow(c, p)
    return _logistic(slack, p["scale_s"]), "slack {:.1f} h", (slack / 3600,)


def _setup(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    wanted, current = c.lot.step.setup, c.tool.current_setup
    if wanted is None:
        return 1.0, "no setup change", ()
    if wanted == current:
        return 1.0, "same setup {}", (wanted,)
    if current is not None:
        need = s.min_run.get(current, 0)
        if c.tool.lots_since_setup < need:
            return (
                -1.0,
                "change {}→{} before the minimum run ({}/{} lots)",
                (current, wanted, c.tool.lots_since_setup, need),
            )
    t = s.setup_time(current, wanted)
    return (
        _decay(t, p["scale_s"]) - 1.0,
        "setup change {}→{} ({:.0f} min)",
        (current, wanted, t / 60),
    )


def _batch(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    step = c.lot.step
    if step.batch_max is None:
        return 0.0, "not a batch step", ()
    size = min(step.batch_max, c.tool.max_lots)
    fill = min(1.0, c.batch_peers / size)
    ready = (
        c.batch_peers >= (step.batch_min or 1)
        or c.batch_oldest_wait_s >= p["max_wait_s"]
        or c.batch_urgent
    )
    if ready:
        return fill, "batch of {}/{} ready", (min(c.batch_peers, size), size)
    return (
        fill - 1.0,
        "batch of {}/{} below minimum {}: worth waiting",
        (min(c.batch_peers, size), size, step.batch_min),
    )


def _qtime(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.qtime_deadline is None:
        return 0.0, "no Q-time window", ()
    left = c.lot.qtime_deadline - s.now
    return _decay(left, p["scale_s"]), "Q-time window closes in {:.0f} min", (left / 60,)


def _wip_balance(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    nxt = c.lot.next_tool_group_id
    if nxt is None:
        return 0.0, "last step", ()
    load = s.loads.get((c.tool.fab_id, nxt), GroupLoad())
    w = load.workload_s
    if math.isinf(w):
        return 0.0, "next tool group has no tool up", ()
    return _decay(w, p["scale_s"]), "next tool group has {:.1f} h of work per tool", (w / 3600,)


HOUR, DAY = 3600.0, 86400.0

RULES: Mapping[str, RuleDef] = {
    r.name: r
    for r in (
        RuleDef(
            "priority",
            _priority,
            {"normal": 0.0, "hot": 0.5, "super_hot": 1.0},
            "class value: normal 0, hot 0.5, super_hot 1 (parameters)",
        ),
        RuleDef("fifo", _fifo, {"scale_s": DAY}, "1 - scale / (scale + wait)"),
        RuleDef(
            "critical_ratio",
            _critical_ratio,
            {"flow_factor": 2.0, "scale": 0.5},
            "CR = (due - now) / (remaining process time * flow factor); 1 / (1 + e^((CR-1)/scale))",
        ),
        RuleDef("edd", _edd, {"scale_s": 2 * DAY}, "1 / (1 + e^((due - now)/scale))"),
        RuleDef("spt", _spt, {"scale_s": HOUR}, "scale / (scale + step process time)"),
        RuleDef("srpt", _srpt, {"scale_s": 10 * DAY}, "scale / (scale + remaining process time)"),
        RuleDef(
            "least_slack",
            _least_slack,
            {"flow_factor": 2.0, "scale_s": DAY},
            "slack = due - now - remaining * flow factor; 1 / (1 + e^(slack/scale))",
        ),
        RuleDef(
            "setup",
            _setup,
            {"scale_s": 30 * 60.0},
            "same setup 1; change: scale / (scale + setup time) - 1; before min run -1",
        ),
        RuleDef(
            "batch",
            _batch,
            {"max_wait_s": 2 * HOUR},
            "fill = lots / batch size; fill if >= minimum, waited >= max wait or urgent, "
            "else fill - 1",
        ),
        RuleDef("qtime", _qtime, {"scale_s": HOUR}, "scale / (scale + time to Q-time deadline)"),
        RuleDef(
            "wip_balance",
            _wip_balance,
            {"scale_s": 4 * HOUR},
            "scale / (scale + queued work per tool up at the next step's tool group)",
        ),
    )
}


class RuleSetError(ValueError):
    """A rule set names an unknown rule or parameter, or a weight is not a number."""


@dataclass(frozen=True, slots=True)
class WeightedRule:
    name: str
    weight: float
    params: Mapping[str, float]
    fn: RuleFn


@dataclass(frozen=True)
class RuleSet:
    """Weighted rules, validated; build with ``RuleSet.build``."""

    rules: tuple[WeightedRule, ...]
    name: str = "default"
    version: int = 0

    @staticmethod
    def build(
        spec: Iterable[Mapping[str, Any]], *, name: str = "default", version: int = 0
    ) -> RuleSet:
        """``spec``: [{"rule": "priority", "weight": 1000, "params": {...}}, ...]."""
        rules = []
        seen = set()
        for entry in spec:
            rule = RULES.get(str(entry.get("rule")))
            if rule is None:
                raise RuleSetError(f"unknown rule {entry.get('rule')!r}; known: {sorted(RULES)}")
            if rule.name in seen:
                raise RuleSetError(f"rule {rule.name} appears twice")
            seen.add(rule.name)
            weight = entry.get("weight", 1.0)
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                raise RuleSetError(f"{rule.name}: weight must be a number")
            if not math.isfinite(weight):
                raise RuleSetError(f"{rule.name}: weight must be finite")
            given = dict(entry.get("params") or {})
            unknown = set(given) - set(rule.defaults)
            if unknown:
                raise RuleSetError(
                    f"{rule.name}: unknown parameters {sorted(unknown)}; known: "
                    f"{sorted(rule.defaults)}"
                )
            params = {**rule.defaults}
            for key, value in given.items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise RuleSetError(f"{rule.name}.{key} must be a number")
                positive = key.endswith("scale_s") or key in ("scale", "flow_factor")
                if positive and not value > 0:
                    raise RuleSetError(f"{rule.name}.{key} must be positive")
                params[key] = float(value)
            rules.append(WeightedRule(rule.name, float(weight), params, rule.fn))
        return RuleSet(tuple(rules), name, version)


DEFAULT_RULE_SET_SPEC: tuple[Mapping[str, Any], ...] = (
    {"rule": "priority", "weight": 1000},
    {"rule": "qtime", "weight": 100},
    {"rule": "batch", "weight": 50},
    {"rule": "setup", "weight": 20},
    {"rule": "critical_ratio", "weight": 5},
    {"rule": "wip_balance", "weight": 2},
    {"rule": "fifo", "weight": 1},
)
DEFAULT_RULE_SET = RuleSet.build(DEFAULT_RULE_SET_SPEC)


# --- what-next -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    rule: str
    weight: float
    value: float
    contribution: float
    why: str


@dataclass(frozen=True, slots=True)
class Ranked:
    lot: LotSnapshot
    rank: int
    score: float
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True, slots=True)
class Excluded:
    lot: LotSnapshot
    reasons: tuple[Exclusion, ...]


@dataclass(frozen=True, slots=True)
class DispatchList:
    tool: ToolSnapshot
    rule_set: str
    rule_set_version: int
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]
    tool_exclusion: Exclusion | None


def explain(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> Ranked:
    parts = []
    total = 0.0
    for rule in rule_set.rules:
        value, why, args = rule.fn(candidate, situation, rule.params)
        contribution = rule.weight * value
        total += contribution
        parts.append(Contribution(rule.name, rule.weight, value, contribution, why.format(*args)))
    return Ranked(candidate.lot, 0, total, tuple(parts))


def _score_only(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> float:
    return sum(r.weight * r.fn(candidate, situation, r.params)[0] for r in rule_set.rules)


def _batch_groups(
    lots: Sequence[LotSnapshot], tool: ToolSnapshot, situation: Situation
) -> dict[tuple[int, str | None], tuple[int, float, bool]]:
    """Per (step, recipe) of the eligible lots: how many, the longest wait, any urgent."""
    groups: dict[tuple[int, str | None], tuple[int, float, bool]] = {}
    for lot in lots:
        if lot.step.batch_max is None:
            continue
        key = (lot.step.id, lot.recipe_on(tool.id))
        n, oldest, urgent = groups.get(key, (0, 0.0, False))
        wait = situation.now - lot.queued_at
        lot_urgent = lot.priority != "normal" or (
            lot.qtime_deadline is not None and lot.qtime_deadline - situation.now < 2 * HOUR
        )
        groups[key] = (n + 1, max(oldest, wait), urgent or lot_urgent)
    return groups


def rank_lots(
    tool: ToolSnapshot,
    lots: Iterable[LotSnapshot],
    situation: Situation,
    rule_set: RuleSet = DEFAULT_RULE_SET,
    *,
    explain_all: bool = True,
) -> DispatchList:
    """What-next: the lots ``tool`` may run, best first, and every other lot with its reasons.

    ``lots`` are the lots at steps of the tool's group (others are excluded as wrong group).
    With ``explain_all`` False only the contributions of the top lot are kept (refresh loops).
    """
    blocked = tool_exclusion(tool)
    eligible: list[LotSnapshot] = []
    excluded: list[Excluded] = []
    for lot in lots:
        reasons = []
        own = lot_exclusion(lot)
        if own is not None:
            reasons.append(own)
        if blocked is not None:
            reasons.append(blocked)
        pair = pair_exclusion(lot, tool, situation)
        if pair is not None:
            reasons.append(pair)
        if reasons:
            excluded.append(Excluded(lot, tuple(reasons)))
        else:
            eligible.append(lot)
    groups = _batch_groups(eligible, tool, situation)
    scored: list[tuple[float, float, str, Candidate, Ranked | None]] = []
    for lot in eligible:
        n, oldest, urgent = groups.get((lot.step.id, lot.recipe_on(tool.id)), (1, 0.0, False))
        candidate = Candidate(lot, tool, n, oldest, urgent)
        if explain_all:
            full = explain(candidate, situation, rule_set)
            scored.append((-full.score, lot.queued_at, lot.code, candidate, full))
        else:
            score = _score_only(candidate, situation, rule_set)
            scored.append((-score, lot.queued_at, lot.code, candidate, None))
    scored.sort(key=lambda t: t[:3])
    ranked = []
    for i, (neg, _q, _c, candidate, done) in enumerate(scored):
        if done is None and i == 0:
            done = explain(candidate, situation, rule_set)
        if done is not None:
            ranked.append(Ranked(done.lot, i + 1, done.score, done.contributions))
        else:
            ranked.append(Ranked(candidate.lot, i + 1, -neg, ()))
    excluded.sort(key=lambda e: e.lot.code)
    return DispatchList(
        tool, rule_set.name, rule_set.version, tuple(ranked), tuple(excluded), blocked
    )


@dataclass(frozen=True, slots=True)
class Starts:
    """What an automatic dispatcher starts on a tool from its list: nothing, the top lot, or
    the top lot's batch (the compatible lots ranked after it, up to the free batch size)."""

    lots: tuple[Ranked, ...]
    # Why nothing starts although lots are offered (a batch worth waiting for).
    waiting: str | None = None


def choose_starts(listing: DispatchList) -> Starts:
    """Batch formation decides for a batch step: when the ``batch`` rule says the batch is
    worth waiting for (value < 0), nothing starts; else the batch starts now with every
    compatible lot offered (up to the free batch size). Other steps: the top lot."""
    tool = listing.tool
    if not listing.ranked or listing.tool_exclusion is not None:
        return Starts(())
    top = listing.ranked[0]
    step = top.lot.step
    free = tool.max_lots - len(tool.running)
    if step.batch_max is None:
        return Starts((top,))  # one lot per tool and cycle; the next cycle sees the rest
    for c in top.contributions:
        if c.rule == "batch" and c.value < 0:
            return Starts((), c.why)
    recipe = top.lot.recipe_on(tool.id)
    size = min(step.batch_max, tool.max_lots) - len(tool.running)
    batch = [
        r for r in listing.ranked if r.lot.step.id == step.id and r.lot.recipe_on(tool.id) == recipe
    ]
    return Starts(tuple(batch[: max(1, min(size, free))]))


# --- where-next ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolOption:
    tool: ToolSnapshot
    rank: int
    # When the lot could start there, in seconds from now, and of what that is made.
    start_in_s: float
    transfer_s: float
    queue_s: float
    setup_s: float
    busy_s: float


@dataclass(frozen=True, slots=True)
class ToolRefused:
    tool: ToolSnapshot
    reasons: tuple[Exclusion, ...]


@dataclass(frozen=True, slots=True)
class WhereNext:
    lot: LotSnapshot
    lot_exclusion: Exclusion | None
    options: tuple[ToolOption, ...]
    refused: tuple[ToolRefused, ...]


def rank_tools(lot: LotSnapshot, tools: Iterable[ToolSnapshot], situation: Situation) -> WhereNext:
    """Where-next: the tools of every fab that could run the lot's step, soonest start first.

    Expected start = transfer to the tool's fab + the fab's queue for the group (queued work
    per tool up) + what runs on the tool now + its setup change. Busy tools and tools not in
    remote control stay options (the lot waits for them); down, unqualified, PM-due and
    dedicated-elsewhere tools are refused, as are tools the lot's Q-time window cannot reach.
    """
    own = lot_exclusion(lot)
    options: list[ToolOption] = []
    refused: list[ToolRefused] = []
    for tool in tools:
        reasons = []
        if own is not None:
            reasons.append(own)
        blocked = tool_exclusion(tool, capacity=False)
        if blocked is not None:
            reasons.append(blocked)
        transfer = situation.transfer(lot.fab_id, tool.fab_id)
        load = situation.loads.get((tool.fab_id, tool.tool_group_id), GroupLoad())
        queue = load.workload_s if not math.isinf(load.workload_s) else 0.0
        setup = situation.setup_time(tool.current_setup, lot.step.setup)
        wait = transfer + max(queue, tool.busy_for_s)
        pair = pair_exclusion(lot, tool, situation, capacity=False, same_fab=False, start_in_s=wait)
        if pair is not None:
            reasons.append(pair)
        if reasons:
            refused.append(ToolRefused(tool, tuple(reasons)))
            continue
        options.append(ToolOption(tool, 0, wait + setup, transfer, queue, setup, tool.busy_for_s))
    options.sort(key=lambda o: (o.start_in_s, o.transfer_s, o.tool.code))
    ranked = tuple(
        ToolOption(o.tool, i + 1, o.start_in_s, o.transfer_s, o.queue_s, o.setup_s, o.busy_s)
        for i, o in enumerate(options)
    )
    refused.sort(key=lambda r: r.tool.code)
    return WhereNext(lot, own, ranked, tuple(refused))
