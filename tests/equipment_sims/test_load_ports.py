"""A simulated tool's load ports over real OPC UA: what its mapper reports when a carrier
arrives (``place_carrier``) and leaves, the report the MES compares at job start."""

from __future__ import annotations

import json

from mes.opcua import mapping
from mes.opcua import model as m

from .conftest import ClientFactory, SimFactory, etch


async def test_the_mapper_reports_the_carrier_and_its_slots(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(etch())
    tc = await connect(sim)
    empty = json.loads(await tc.read(m.COUNTERS, m.LOAD_PORTS))
    assert empty == [
        {"PortID": 1, "CarrierID": "", "SlotMap": []},
        {"PortID": 2, "CarrierID": "", "SlotMap": []},
    ]
    await sim.inject("place_carrier", port=2, carrier_id="FP-7", slots=[1, 2, 25])
    # A fault is published before ``inject`` returns.
    reported = mapping.carriers_on_ports(await tc.read(m.COUNTERS, m.LOAD_PORTS))
    assert reported == {"FP-7": frozenset({1, 2, 25})}
    # The port is taken: a second carrier is refused there and the report keeps the first.
    await sim.inject("place_carrier", port=2, carrier_id="FP-8", slots=[1])
    assert sim.tool.docked == {2: ("FP-7", frozenset({1, 2, 25}))}
    await sim.inject("remove_carrier", port=2)
    assert mapping.carriers_on_ports(await tc.read(m.COUNTERS, m.LOAD_PORTS)) == {}
