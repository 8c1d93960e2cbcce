"""The dispatcher's back-off per tool and refusal code (pure)."""

from mes.dispatch.backoff import Backoff, refusal_code


def test_the_same_refusal_doubles_the_pause_up_to_the_cap():
    b = Backoff(base_s=30, max_s=100)
    assert b.refused(7, "tool.busy", now=0).until == 30
    assert b.paused(7, 29.9) is not None
    assert b.paused(7, 30) is None
    assert b.refused(7, "tool.busy", now=30).until == 30 + 60
    assert b.refused(7, "tool.busy", now=90).until == 90 + 100  # capped
    assert b.paused(8, 0) is None  # other tools are not affected


def test_another_code_starts_over_and_an_accepted_job_clears():
    b = Backoff(base_s=10)
    b.refused(1, "tool.busy", now=0)
    b.refused(1, "tool.busy", now=10)
    assert b.refused(1, "recipe.checksum_mismatch", now=30).until == 40
    b.accepted(1)
    assert b.paused(1, 31) is None
    assert b.refused(1, "recipe.checksum_mismatch", now=50).count == 1


def test_codes_are_read_from_the_jobs_error():
    assert refusal_code("recipe.checksum_mismatch: tool reports abc") == "recipe.checksum_mismatch"
    assert refusal_code("tool.not_remote: the tool is OnlineLocal") == "tool.not_remote"
    assert refusal_code("StoreAndStart refused by the tool: BadResourceUnavailable") == (
        "tool.refused"
    )
    assert refusal_code(None) == "tool.refused"
