"""Products: define, rename, look up."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.errors import Conflict
from mes.kit.lookup import get_by_key
from mes.products.models import Product
from mes.products.schemas import ProductCreate, ProductUpdate


def product_query() -> Select[Product]:
    """Every product, by code."""
    return select(Product).order_by(Product.code)


async def get_product(session: AsyncSession, code: str) -> Product:
    """The product ``code``, or product.not_found."""
    return await get_by_key(
        session, Product, Product.code, code, code="product.not_found", what="product"
    )


async def create_product(session: AsyncSession, data: ProductCreate) -> Product:
    """Define a product."""
    if await session.scalar(select(Product.id).where(Product.code == data.code)) is not None:
        raise Conflict(f"product {data.code!r} already exists", code="product.duplicate")
    product = Product(code=data.code, name=data.name, description=data.description)
    session.add(product)
    await session.flush()
    return product


async def update_product(session: AsyncSession, code: str, data: ProductUpdate) -> Product:
    """Rename or describe a product."""
    product = await get_product(session, code)
    for field, value in data.model_dump(exclude_unset=True).items():
        if field == "name" and value is None:
            continue
        setattr(product, field, value)
    await session.flush()
    return product
