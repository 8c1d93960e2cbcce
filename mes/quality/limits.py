"""Control limits and process capability for SPC charts: pure functions on plain numbers.

Three chart families, as in every SPC text:

- **individuals / moving range (I-MR)**: one value per point (one wafer, one site mean); the
  within-process sigma is the mean moving range of neighbouring values over d2(2);
- **X̄-R**: one subgroup per point (the sites or wafers of a sample plan); sigma = R̄ / d2(n);
- **X̄-S**: as X̄-R, from the subgroups' standard deviations; sigma = S̄ / c4(n) — better than
  the range once subgroups exceed about ten values.

Subgroups may differ in size (a wafer broke, a site failed to measure): sigma is then pooled as
the mean of each subgroup's own estimate, and every point gets its own limits (± 3 sigma/√nᵢ), which
is why a chart is described by ``ChartPoint`` rows rather than one pair of lines.

The bias constants: c4(n) is exact (a ratio of gamma functions); d2(n), the expected range of
n standard normal values, is integrated numerically; d3(n), the standard deviation of that
range, is the published table for n = 2..25 (a double integral is not worth computing here).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from itertools import pairwise

MAX_SUBGROUP = 25

# Standard deviation of the range of n standard normal values, n = 2..25 (published constants).
_D3 = (
    0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787, 0.778, 0.770,
    0.763, 0.756, 0.750, 0.744, 0.739, 0.734, 0.729, 0.724, 0.720, 0.716, 0.712, 0.708,
)  # fmt: skip


class ChartKind(StrEnum):
    INDIVIDUALS = "individuals"  # I-MR
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"


class LimitsError(ValueError):
    """Limits cannot be computed from these data (too few points, no variation, bad sizes)."""


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@cache
def d2(n: int) -> float:
    """Expected range of ``n`` independent standard normal values."""
    _check_size(n)
    # E[R] = ∫ 1 - Φ(x)^n - (1 - Φ(x))^n dx; the integrand is negligible beyond |x| = 9.
    steps, low, high = 3600, -9.0, 9.0
    width = (high - low) / steps
    total = 0.0
    for i in range(steps + 1):
        phi = _normal_cdf(low + i * width)
        weight = 0.5 if i in (0, steps) else 1.0
        total += weight * (1.0 - phi**n - (1.0 - phi) ** n)
    return total * width


def d3(n: int) -> float:
    """Standard deviation of the range of ``n`` independent standard normal values."""
    _check_size(n)
    return _D3[n - 2]


def c4(n: int) -> float:
    """E[s] / sigma for a sample standard deviation of ``n`` normal values."""
    _check_size(n)
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def _check_size(n: int) -> None:
    if not 2 <= n <= MAX_SUBGROUP:
        raise LimitsError(f"subgroup size must be 2..{MAX_SUBGROUP}, got {n}")


@dataclass(frozen=True)
class Limits:
    """A centre line and the sigma of the plotted statistic at one point; the control limits are
    centre ± 3 sigma, cut at ``floor`` (a range or deviation cannot go below zero)."""

    center: float
    sigma: float
    floor: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.sigma)) or self.sigma <= 0:
            raise LimitsError("control limits need a finite centre and a sigma above zero")

    @property
    def ucl(self) -> float:
        return self.center + 3 * self.sigma

    @property
    def lcl(self) -> float:
        low = self.center - 3 * self.sigma
        return low if self.floor is None else max(self.floor, low)

    def zone(self, value: float) -> float:
        """Signed distance from the centre in sigmas (+2.5 is in zone A above the centre)."""
        return (value - self.center) / self.sigma


@dataclass(frozen=True)
class ChartLimits:
    """What an engineer freezes for a chart: the process centre and within-process sigma (of one
    value), from which every point's limits follow for its own subgroup size."""

    kind: ChartKind
    center: float
    sigma_within: float
    dispersion_center: float  # mean moving range, R̄ or S̄ at the baseline's subgroup size
    subgroup_size: int  # 1 for individuals

    def location(self, n: int = 0) -> Limits:
        """Limits of the X (or X̄) chart for a point of ``n`` values (the baseline size if 0)."""
        size = n or self.subgroup_size
        return Limits(self.center, self.sigma_within / math.sqrt(size))

    def dispersion(self, n: int = 0) -> Limits:
        """Limits of the MR, R or S chart for a point of ``n`` values."""
        size = n or self.subgroup_size
        sigma = self.sigma_within
        if self.kind is ChartKind.INDIVIDUALS:
            return Limits(d2(2) * sigma, d3(2) * sigma, floor=0.0)
        if self.kind is ChartKind.XBAR_R:
            return Limits(d2(size) * sigma, d3(size) * sigma, floor=0.0)
        c = c4(size)
        return Limits(c * sigma, sigma * math.sqrt(1 - c * c), floor=0.0)


def moving_ranges(values: Sequence[float]) -> list[float]:
    return [abs(b - a) for a, b in pairwise(values)]


def individuals_limits(values: Sequence[float]) -> ChartLimits:
    """I-MR limits from a baseline of single values (at least two, not all equal)."""
    if len(values) < 2:
        raise LimitsError("an individuals chart needs at least 2 baseline values")
    mr_bar = statistics.fmean(moving_ranges(values))
    return _checked(ChartKind.INDIVIDUALS, statistics.fmean(values), mr_bar / d2(2), mr_bar, 1)


def subgroup_limits(subgroups: Sequence[Sequence[float]], kind: ChartKind) -> ChartLimits:
    """X̄-R or X̄-S limits from a baseline of subgroups (sizes 2..25, may differ)."""
    if kind is ChartKind.INDIVIDUALS:
        raise LimitsError("use individuals_limits for an individuals chart")
    if not subgroups:
        raise LimitsError("a subgroup chart needs at least 1 baseline subgroup")
    sizes = [len(group) for group in subgroups]
    for size in sizes:
        _check_size(size)
    if kind is ChartKind.XBAR_R:
        spreads = [max(group) - min(group) for group in subgroups]
        sigma = statistics.fmean(s / d2(n) for s, n in zip(spreads, sizes, strict=True))
    else:
        spreads = [statistics.stdev(group) for group in subgroups]
        sigma = statistics.fmean(s / c4(n) for s, n in zip(spreads, sizes, strict=True))
    # The grand mean weights every value alike, so a short subgroup does not count double.
    center = math.fsum(math.fsum(group) for group in subgroups) / sum(sizes)
    typical = max(set(sizes), key=sizes.count)
    return _checked(kind, center, sigma, statistics.fmean(spreads), typical)


def _checked(kind: ChartKind, center: float, sigma: float, spread: float, size: int) -> ChartLimits:
    if not sigma > 0:
        raise LimitsError("the baseline shows no variation: sigma would be zero")
    return ChartLimits(kind, center, sigma, spread, size)


@dataclass(frozen=True)
class Capability:
    """Cp/Cpk from the within-process sigma (what the process could do), Pp/Ppk from the overall
    sample standard deviation (what it did). A one-sided specification has no Cp or Pp."""

    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None
    mean: float
    sigma_within: float
    sigma_overall: float


def capability(
    values: Sequence[float], sigma_within: float, lsl: float | None, usl: float | None
) -> Capability:
    if lsl is None and usl is None:
        raise LimitsError("capability needs at least one specification limit")
    if lsl is not None and usl is not None and not lsl < usl:
        raise LimitsError("the lower specification limit must be below the upper one")
    if len(values) < 2:
        raise LimitsError("capability needs at least 2 values")
    mean = statistics.fmean(values)
    overall = statistics.stdev(values)

    def indices(sigma: float) -> tuple[float | None, float | None]:
        if not sigma > 0:
            return None, None
        both = lsl is not None and usl is not None
        spread = (usl - lsl) / (6 * sigma) if both else None  # type: ignore[operator]
        sides = [usl - mean if usl is not None else None, mean - lsl if lsl is not None else None]
        worst = min(side for side in sides if side is not None) / (3 * sigma)
        return spread, worst

    cp, cpk = indices(sigma_within)
    pp, ppk = indices(overall)
    return Capability(cp, cpk, pp, ppk, mean, sigma_within, overall)
