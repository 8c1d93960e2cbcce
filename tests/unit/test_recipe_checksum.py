import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from mes.recipes.rules import body_checksum, canonical_body

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_checksum_is_sha256_of_sorted_compact_json():
    body = {"b": 1, "a": [1, 2, {"z": "ü", "y": None}]}
    expected = hashlib.sha256('{"a":[1,2,{"y":null,"z":"ü"}],"b":1}'.encode()).hexdigest()
    assert body_checksum(body) == expected


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_checksum_ignores_key_order_and_formatting(body):
    reordered = dict(reversed(list(body.items())))
    reparsed = json.loads(json.dumps(body, indent=3))
    assert body_checksum(body) == body_checksum(reordered) == body_checksum(reparsed)
    assert json.loads(canonical_body(body)) == body


def test_any_parameter_change_changes_the_checksum():
    base = {"parameters": [{"name": "dose", "value": 32.5}]}
    changed = {"parameters": [{"name": "dose", "value": 32.6}]}
    assert body_checksum(base) != body_checksum(changed)
