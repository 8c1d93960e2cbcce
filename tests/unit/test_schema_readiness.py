"""Which schemas a build may serve: the pure rule behind /readyz during a rolling upgrade."""

from __future__ import annotations

from mes.db.schema_history import readiness

BUILD = {"a1", "b2", "c3"}  # this build's migrations, c3 its head


def test_the_build_serves_its_own_head() -> None:
    verdict = readiness("c3", "c3", BUILD, [])
    assert verdict.ready


def test_a_schema_behind_the_build_is_not_served() -> None:
    verdict = readiness("b2", "c3", BUILD, [("b2", False)])
    assert not verdict.ready
    assert "behind" in verdict.detail


def test_an_empty_database_is_not_served() -> None:
    assert not readiness(None, "c3", BUILD, []).ready


def test_a_newer_schema_that_only_added_is_served() -> None:
    applied = [("b2", False), ("c3", False), ("d4", False), ("e5", False)]
    verdict = readiness("e5", "c3", BUILD, applied)
    assert verdict.ready
    assert "2 migration(s)" in verdict.detail


def test_a_newer_schema_with_a_breaking_migration_after_the_head_is_not_served() -> None:
    applied = [("c3", False), ("d4", True), ("e5", False)]
    verdict = readiness("e5", "c3", BUILD, applied)
    assert not verdict.ready
    assert "d4" in verdict.detail


def test_a_breaking_migration_before_the_build_head_does_not_count() -> None:
    applied = [("b2", True), ("c3", False), ("d4", False)]
    assert readiness("d4", "c3", BUILD, applied).ready


def test_an_unknown_schema_without_the_build_head_in_its_history_is_not_served() -> None:
    # Another line of migrations (or a history from before the table existed).
    verdict = readiness("x9", "c3", BUILD, [("x8", False), ("x9", False)])
    assert not verdict.ready
    assert "does not contain" in verdict.detail
