from datetime import UTC, datetime

from mes.audit.chain import GENESIS_HASH, ChainVerifier, record_hash


def _records(n: int) -> list[dict]:
    out = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        record = {
            "id": 100 + i,
            "chain_seq": i,
            "occurred_at": datetime(2026, 1, 1, 8, i, tzinfo=UTC),
            "actor": "op1",
            "role": "operator",
            "operation": "equipment.change_state",
            "action": "update",
            "target_type": "equipment",
            "target_id": "F1-ETPO01",
            "fab_id": 1,
            "before": {"e10_state": "SBY"},
            "after": {"e10_state": "PRD", "n": i},
            "reason": None,
            "signature_meaning": None,
            "signature_method": None,
            "request_id": f"r{i}",
        }
        record["prev_hash"] = prev
        record["hash"] = prev = record_hash(prev, record)
        out.append(record)
    return out


def _verify(records, head_seq=None, head_hash=None):
    verifier = ChainVerifier()
    for r in records:
        verifier.feed(r)
    if head_seq is None and records:
        head_seq, head_hash = records[-1]["chain_seq"], records[-1]["hash"]
    return verifier.finish(head_seq, head_hash)


def test_intact_chain_verifies():
    assert _verify(_records(20)) == []


def test_edited_field_is_named():
    records = _records(10)
    records[4]["after"] = {"e10_state": "UDT", "n": 5}
    problems = _verify(records)
    assert [p.record_id for p in problems] == [105]
    assert "altered" in problems[0].message


def test_deleted_record_is_named_by_its_gap():
    records = _records(10)
    del records[6]
    problems = _verify(records)
    assert any("chain_seq 7 missing" in p.message for p in problems)


def test_truncated_tail_is_caught_by_the_head():
    records = _records(10)
    head_seq, head_hash = records[-1]["chain_seq"], records[-1]["hash"]
    problems = _verify(records[:8], head_seq, head_hash)
    assert len(problems) == 1
    assert "head names chain_seq 10" in problems[0].message


def test_rehashing_one_record_breaks_the_link_to_the_next():
    records = _records(5)
    records[1]["actor"] = "mallory"
    records[1]["hash"] = record_hash(records[1]["prev_hash"], records[1])
    problems = _verify(records, records[-1]["chain_seq"], records[-1]["hash"])
    assert [p.record_id for p in problems] == [103]
    assert "does not link" in problems[0].message


def test_hash_is_stable_across_key_order_and_time_zone():
    record = _records(1)[0]
    shuffled = dict(reversed(list(record.items())))
    shuffled["occurred_at"] = record["occurred_at"].astimezone()
    assert record_hash(GENESIS_HASH, shuffled) == record["hash"]
