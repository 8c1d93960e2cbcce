"""The one lease mechanism (``mes.kit.lease``) on a real lease table, on both databases: take,
renew, refuse, expire, take over, release. Races between processes are covered where they are
used (tests/concurrency/test_dispatch_leader.py, tests/opcua)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch.models import DispatchLeader
from mes.fabs.models import Fab
from mes.kit.lease import LeaseTable
from tests.conftest import NOW

TTL = timedelta(seconds=30)
LEASES: LeaseTable[int] = LeaseTable(DispatchLeader, DispatchLeader.fab_id)


async def _fab_ids(session: AsyncSession) -> list[int]:
    return list(await session.scalars(select(Fab.id).order_by(Fab.code)))


async def _row(session: AsyncSession, fab_id: int) -> DispatchLeader:
    row = await session.get(DispatchLeader, fab_id, populate_existing=True)
    assert row is not None
    return row


async def test_a_lease_is_taken_renewed_refused_to_others_and_taken_over_once_expired(
    session: AsyncSession,
) -> None:
    fab, *_ = await _fab_ids(session)
    assert await LEASES.acquire(session, fab, "a", NOW, TTL)  # no row yet: created
    created = await _row(session, fab)
    assert (created.owner, created.acquired_at, created.expires_at) == ("a", NOW, NOW + TTL)

    later = NOW + timedelta(seconds=10)
    assert not await LEASES.acquire(session, fab, "b", later, TTL)  # a's, unexpired
    assert await LEASES.acquire(session, fab, "a", later, TTL)  # ours: renewed
    renewed = await _row(session, fab)
    assert (renewed.renewed_at, renewed.expires_at, renewed.acquired_at) == (
        later,
        later + TTL,
        NOW,
    )
    assert await LEASES.holds(session, fab, "a", later, lock=True)
    assert not await LEASES.holds(session, fab, "b", later)

    expired = later + TTL + timedelta(seconds=1)
    assert not await LEASES.holds(session, fab, "a", expired)
    assert await LEASES.acquire(session, fab, "b", expired, TTL)  # taken over
    assert (await _row(session, fab)).owner == "b"
    assert not await LEASES.holds(session, fab, "a", expired)
    assert await LEASES.holds(session, fab, "b", expired)


async def test_renew_keeps_only_the_unexpired_leases_of_the_owner(session: AsyncSession) -> None:
    first, second, *_ = await _fab_ids(session)
    assert await LEASES.acquire(session, first, "a", NOW, TTL)
    assert await LEASES.acquire(session, second, "a", NOW - TTL - TTL, TTL)  # long expired
    later = NOW + timedelta(seconds=5)
    assert await LEASES.renew(session, [first, second], "a", later, TTL) == {first}
    assert await LEASES.renew(session, [first], "b", later, TTL) == set()
    assert await LEASES.renew(session, [], "a", later, TTL) == set()
    assert (await _row(session, first)).expires_at == later + TTL


async def test_release_frees_the_lease_at_once_and_only_the_owners(
    session: AsyncSession,
) -> None:
    fab, *_ = await _fab_ids(session)
    assert await LEASES.acquire(session, fab, "a", NOW, TTL)
    await LEASES.release(session, [fab], "b", NOW)  # not b's: nothing happens
    assert await LEASES.holds(session, fab, "a", NOW)
    await LEASES.release(session, [fab], "a", NOW)
    assert (await _row(session, fab)).expires_at == NOW
    later = NOW + timedelta(microseconds=1)
    assert not await LEASES.holds(session, fab, "a", later)
    assert await LEASES.acquire(session, fab, "b", later, TTL)


async def test_extra_values_are_written_on_take_and_release(session: AsyncSession) -> None:
    fab, *_ = await _fab_ids(session)
    assert await LEASES.acquire(session, fab, "a", NOW, TTL)
    later = NOW + timedelta(seconds=10)
    assert await LEASES.acquire(session, fab, "a", later, TTL, values={"acquired_at": later})
    assert (await _row(session, fab)).acquired_at == later
    await LEASES.release(session, [fab], "a", later, values={"renewed_at": NOW})
    assert (await _row(session, fab)).renewed_at == NOW


def test_a_table_without_the_lease_columns_is_refused() -> None:
    with pytest.raises(TypeError, match="lacks the lease columns"):
        LeaseTable(Fab, Fab.id)
