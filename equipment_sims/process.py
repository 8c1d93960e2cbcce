"""Process values with noise, and metrology measurements with noise and drift.

Randomness comes from ``random.Random`` objects seeded from the fab seed and the tool id, so a
run with the same seed measures the same values in the same order.
"""

from __future__ import annotations

import math
import random

from mes.opcua.model import PROCESS_VALUES

from .recipes import AMBIENT_PA, Recipe

IDLE_VALUES: dict[str, float] = {
    "ChamberTemperature": 22.0,
    "ChamberPressure": AMBIENT_PA,
    "RfForwardPower": 0.0,
    "GasFlow_1": 0.0,
    "GasFlow_2": 0.0,
}
# Relative noise of a process value around its setpoint (1 sigma).
RELATIVE_NOISE = 0.004

# Metrology defaults by tool group suffix: (nominal value, sigma per site).
_METROLOGY = {"CD": (45.0, 0.6), "THK": (100.0, 0.8), "OVL": (0.0, 1.2)}


def seeded_rng(seed: int, tool_id: str, stream: str) -> random.Random:
    # String seeds go through SHA-512, so this does not depend on PYTHONHASHSEED.
    return random.Random(f"{seed}/{tool_id}/{stream}")


def sensor_names(count: int) -> list[str]:
    return [f"Sensor{i:02d}" for i in range(1, count + 1)]


def sensor_level(index: int) -> float:
    """The level an extra sensor channel reads around (volts; distinct per channel)."""
    return 1.0 + 0.25 * index


def noisy_values(
    setpoints: dict[str, float], rng: random.Random, sensors: int = 0
) -> dict[str, float]:
    """Every published process value: setpoint (or idle value) plus a little noise; extra
    sensor channels always carry noise, so each one changes at every publication."""
    values: dict[str, float] = {}
    for name in PROCESS_VALUES:
        target = setpoints.get(name, IDLE_VALUES[name])
        values[name] = target + rng.gauss(0.0, abs(target) * RELATIVE_NOISE) if target else 0.0
    for index, name in enumerate(sensor_names(sensors)):
        level = sensor_level(index)
        values[name] = level + rng.gauss(0.0, level * RELATIVE_NOISE)
    return values


class MeasurementModel:
    """Site measurements of one metrology tool: target + offset + drift * wafers since the
    drift began + noise. ``offset`` is a mean shift and ``drift_per_wafer`` a trend, both
    switched on by faults (``shift_mean``, ``set_drift``) so a chart can be seen to catch them."""

    def __init__(
        self,
        tool_group: str,
        rng: random.Random,
        *,
        sigma: float | None = None,
        drift_per_wafer: float = 0.0,
    ) -> None:
        suffix = tool_group.split("_")[-1].upper()
        nominal, default_sigma = _METROLOGY.get(suffix, (100.0, 1.0))
        self.nominal = nominal
        self.sigma = default_sigma if sigma is None else sigma
        self.drift_per_wafer = drift_per_wafer
        self.drift_from = 0  # wafers measured when the drift began
        self.offset = 0.0
        self.wafers_measured = 0
        self._rng = rng

    def target(self, recipe: Recipe) -> float:
        for name, value in recipe.parameters.items():
            if name.startswith("target") and isinstance(value, float):
                return value
        return self.nominal

    def measure(self, recipe: Recipe) -> list[float]:
        sites = max(1, int(recipe.number("sites", 9.0)))
        drifted = self.drift_per_wafer * (self.wafers_measured - self.drift_from)
        centre = self.target(recipe) + self.offset + drifted
        self.wafers_measured += 1
        return [round(centre + self._rng.gauss(0.0, self.sigma), 4) for _ in range(sites)]

    def start_drift(self, per_wafer: float) -> None:
        """Drift by ``per_wafer`` for every wafer from now on (what was drifted so far stays,
        as an offset: a trend changes its slope, the values do not jump). A drift that made
        the values unreadable (NaN, a bad-message test) leaves nothing behind."""
        drifted = self.drift_per_wafer * (self.wafers_measured - self.drift_from)
        if math.isfinite(drifted):
            self.offset += drifted
        self.drift_per_wafer = per_wafer
        self.drift_from = self.wafers_measured
