"""Recipes: parsing a recipe body and turning its parameters into process steps.

A body is what the MES stores (``{"parameters": [{"name", "value", "unit", ...}]}``) or a flat
``{name: value}`` object. The checksum is the MES's one (``mes.opcua.model.recipe_checksum``).
The step model is a plausible caricature of each tool family, not physics: it makes durations
and process values follow the recipe so the MES sees recipe-dependent behaviour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mes.opcua.model import recipe_checksum

ParamValue = float | str

# Pressure units to pascal.
_PRESSURE_PA = {"pa": 1.0, "mtorr": 0.133322, "torr": 133.322, "mbar": 100.0}
AMBIENT_PA = 101_325.0


class RecipeError(ValueError):
    """A recipe body that cannot be used."""


@dataclass(frozen=True)
class Step:
    name: str
    duration: float  # simulated seconds
    setpoints: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    recipe_id: str
    body: dict[str, Any]
    checksum: str
    parameters: dict[str, ParamValue]
    units: dict[str, str]

    @classmethod
    def from_json(cls, recipe_id: str, body_json: str) -> Recipe:
        try:
            body = json.loads(body_json)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"recipe body is not JSON: {exc.msg}") from exc
        if not isinstance(body, dict):
            raise RecipeError("recipe body must be a JSON object")
        return cls.from_body(recipe_id, body)

    @classmethod
    def from_body(cls, recipe_id: str, body: dict[str, Any]) -> Recipe:
        if not recipe_id:
            raise RecipeError("recipe id is empty")
        params: dict[str, ParamValue] = {}
        units: dict[str, str] = {}
        raw = body.get("parameters")
        if isinstance(raw, list):
            for item in raw:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise RecipeError("each parameter needs a name")
                params[item["name"]] = _value(item.get("value"))
                if isinstance(item.get("unit"), str):
                    units[item["name"]] = item["unit"]
        else:
            for key, value in body.items():
                if isinstance(value, int | float | str) and not isinstance(value, bool):
                    params[key] = _value(value)
        try:
            checksum = recipe_checksum(body)
        except ValueError as exc:  # NaN or infinity
            raise RecipeError(str(exc)) from exc
        return cls(recipe_id, body, checksum, params, units)

    def out_of_range(self) -> str:
        """Why a parameter lies outside the body's own ``min``/``max`` ("" when none does)."""
        raw = self.body.get("parameters")
        for item in raw if isinstance(raw, list) else []:
            value = item.get("value")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            low, high = item.get("min"), item.get("max")
            if isinstance(low, int | float) and value < low:
                return f"{item['name']} = {value} is below its minimum {low}"
            if isinstance(high, int | float) and value > high:
                return f"{item['name']} = {value} is above its maximum {high}"
        return ""

    def number(self, name: str, default: float) -> float:
        value = self.parameters.get(name)
        return value if isinstance(value, float) else default

    def pressure_pa(self, default_pa: float) -> float:
        value = self.parameters.get("pressure")
        if not isinstance(value, float):
            return default_pa
        return value * _PRESSURE_PA.get(self.units.get("pressure", "Pa").lower(), 1.0)

    def flows(self) -> list[float]:
        return [
            v for k, v in self.parameters.items() if k.endswith("_flow") and isinstance(v, float)
        ]


def _value(value: Any) -> ParamValue:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def _gas(recipe: Recipe) -> dict[str, float]:
    flows = recipe.flows()
    return {f"GasFlow_{i + 1}": flow for i, flow in enumerate(flows[:2])}


def wafer_steps(recipe: Recipe, family: str, transfer_s: float) -> list[Step]:
    """Steps one wafer goes through (single-wafer and cluster tools)."""
    load = Step("Load", transfer_s, {})
    if family == "litho":
        dose = recipe.number("dose", 30.0)
        return [
            load,
            Step("Align", 8.0, {"ChamberTemperature": 22.0}),
            Step("Expose", 20.0 + dose, {"ChamberTemperature": 22.0}),
        ]
    if family == "implant":
        dose = recipe.number("dose", 1e15)
        return [
            load,
            Step("PumpDown", 12.0, {"ChamberPressure": 1e-3}),
            Step(
                "Implant",
                20.0 + min(dose / 1e14, 120.0),
                {"ChamberPressure": 5e-4, "ChamberTemperature": 25.0},
            ),
        ]
    if family == "metrology":
        sites = recipe.number("sites", 9.0)
        return [load, Step("Measure", 3.0 * sites, {"ChamberTemperature": 22.0})]
    if family == "deposition":
        temp = recipe.number("temperature", 250.0)
        rate = 5.0 if "teos_flow" in recipe.parameters or "sih4_flow" in recipe.parameters else 2.0
        dep_time = recipe.number("time", recipe.number("thickness_target", 200.0) / rate)
        power = recipe.number("rf_power", recipe.number("dc_power", 0.0))
        pressure = recipe.pressure_pa(500.0)
        base = {"ChamberTemperature": temp, "ChamberPressure": pressure}
        # The heater holds the chamber at process temperature: a wafer loads into a hot
        # chamber (a chamber at room temperature read as the wafer's temperature otherwise).
        return [
            Step("Load", transfer_s, {"ChamberTemperature": temp}),
            Step("Stabilize", 15.0, base | _gas(recipe)),
            Step("Deposit", dep_time, base | _gas(recipe) | {"RfForwardPower": power}),
            Step("Purge", 10.0, {"ChamberTemperature": temp, "ChamberPressure": pressure}),
        ]
    # etch, and anything else that runs wafer by wafer in a chamber
    pressure = recipe.pressure_pa(2.0)
    base = {"ChamberTemperature": 60.0, "ChamberPressure": pressure}
    return [
        Step("Load", transfer_s, {"ChamberTemperature": 60.0}),  # the chuck held at 60 °C
        Step("Stabilize", 10.0, base | _gas(recipe)),
        Step(
            "MainEtch",
            recipe.number("time", 90.0),
            base | _gas(recipe) | {"RfForwardPower": recipe.number("rf_power", 500.0)},
        ),
        Step("Purge", 8.0, {"ChamberTemperature": 60.0, "ChamberPressure": pressure}),
    ]


def batch_steps(recipe: Recipe, family: str, transfer_s: float) -> list[Step]:
    """Steps a whole batch goes through together (furnaces, wet benches)."""
    load = Step("Load", transfer_s * 4, {})
    if family == "wet":
        steps = [load]
        for name, value in recipe.parameters.items():
            if not name.endswith("_time") or not isinstance(value, float):
                continue
            chem = name.removesuffix("_time")
            temp = recipe.number(f"{chem}_temperature", 25.0)
            steps.append(Step(chem.upper(), value, {"ChamberTemperature": temp}))
            steps.append(Step("Rinse", 120.0, {"ChamberTemperature": 25.0}))
        steps.append(Step("Dry", 300.0, {"ChamberTemperature": 40.0}))
        return steps
    temp = recipe.number("temperature", 900.0)
    ramp = max(60.0, (temp - 600.0) / 20.0 * 60.0)  # 20 °C per minute from 600 °C standby
    flows = _gas(recipe)
    process = {"ChamberTemperature": temp, "ChamberPressure": AMBIENT_PA} | flows
    return [
        load,
        Step("RampUp", ramp, {"ChamberTemperature": (temp + 600.0) / 2, **flows}),
        Step("Process", recipe.number("time", 1800.0), process),
        Step("RampDown", ramp, {"ChamberTemperature": (temp + 600.0) / 2}),
    ]
