"""OPC UA side of the MES: the published tool contract (``model``) and, later, the adapter."""
