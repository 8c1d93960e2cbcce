"""Simulated fab tools served as real OPC UA servers (asyncua), with fault injection.

Usable without the MES: the only MES module imported is ``mes.opcua.model``, the published tool
contract. Pure behaviour lives in ``tool`` (state machine), ``recipes``, ``process`` and
``clock``; ``server`` puts one tool behind one OPC UA endpoint; ``fab`` reads a fab description
and ``launcher`` serves a whole fab (``python -m equipment_sims --fab FILE``).
"""
