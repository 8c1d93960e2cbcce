"""Simulated fab tools served as real OPC UA servers (asyncua), with fault injection.

Usable without the MES: the only MES module imported is ``mes.opcua.model``, the published tool
contract. Pure behaviour lives in ``tool`` (state machine), ``records`` (its jobs, wafers,
alarms and events), ``recipes``, ``process`` and ``clock``; ``server`` puts one tool behind one
OPC UA endpoint (with ``address_space``, ``publishing``, ``host_methods``, ``fault_injection``
and the ``shelf`` cache); ``fab`` reads a fab description and ``launcher`` serves a whole fab
(``python -m equipment_sims --fab FILE``).
"""
