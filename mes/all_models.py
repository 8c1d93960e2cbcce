"""Imports every model module so that ``Base.metadata`` is complete (Alembic, tests)."""

from mes.audit import models as audit_models
from mes.auth import models as auth_models
from mes.carriers import models as carriers_models
from mes.db.base import Base
from mes.db.schema_history import SchemaStep
from mes.dispatch import models as dispatch_models
from mes.durables import models as durables_models
from mes.equipment import models as equipment_models
from mes.fabs import models as fabs_models
from mes.jobs import models as jobs_models
from mes.kit import idempotency as idempotency_models
from mes.lots import models as lots_models
from mes.opcua import models as opcua_models
from mes.planning import models as planning_models
from mes.products import models as products_models
from mes.quality import models as quality_models
from mes.recipes import models as recipes_models
from mes.routes import models as routes_models

__all__ = [
    "Base",
    "SchemaStep",
    "audit_models",
    "auth_models",
    "carriers_models",
    "dispatch_models",
    "durables_models",
    "equipment_models",
    "fabs_models",
    "idempotency_models",
    "jobs_models",
    "lots_models",
    "opcua_models",
    "planning_models",
    "products_models",
    "quality_models",
    "recipes_models",
    "routes_models",
]

metadata = Base.metadata
