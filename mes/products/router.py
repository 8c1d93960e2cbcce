"""Products: the device types lots are started as."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.kit.api import CodePath, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep
from mes.products import service
from mes.products.schemas import ProductCreate, ProductRead, ProductUpdate

router = APIRouter(prefix="/products", tags=["products"])

ProductWriter = Annotated[Principal, requires(roles.PRODUCT_WRITE)]


@router.get("", response_model=Page[ProductRead])
async def list_products(session: ReadSession, page: PageQuery) -> Page[ProductRead]:
    """All products."""
    rows, total = await fetch_page(session, service.product_query(), page)
    return Page(
        items=[ProductRead.model_validate(p) for p in rows], total=total, **page.model_dump()
    )


@router.post("", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductCreate, _by: ProductWriter, session: WriteSession, once: OnceDep
) -> ProductRead | JSONResponse:
    """Define a product."""

    async def op() -> ProductRead:
        return ProductRead.model_validate(await service.create_product(session, body))

    return await once.run(op)


@router.get("/{product}", response_model=ProductRead)
async def get_product(product: CodePath, session: ReadSession) -> ProductRead:
    """One product."""
    return ProductRead.model_validate(await service.get_product(session, product))


@router.patch("/{product}", response_model=ProductRead)
async def update_product(
    product: CodePath, body: ProductUpdate, _by: ProductWriter, session: WriteSession
) -> ProductRead:
    """Rename or describe a product."""
    return ProductRead.model_validate(await service.update_product(session, product, body))
