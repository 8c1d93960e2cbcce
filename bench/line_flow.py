"""How much a running line has done, read through the API: lots started by the start plans,
moves (track-outs), lots completed, holds, tools by E10 state. For `make run`: start it, wait,
then `python bench/line_flow.py --url http://127.0.0.1:8000` (figures, then one JSON line).

    python bench/line_flow.py --url http://127.0.0.1:8000 --after 75
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

import httpx


def _all(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(path, params={**params, "limit": 500, "offset": len(items)})
        page.raise_for_status()
        body = page.json()
        items.extend(body["items"])
        if len(items) >= body["total"] or not body["items"]:
            return items


def measure(url: str, user: str, password: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": user, "password": password}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        plans = _all(client, "/api/v1/start-plans")
        lots = _all(client, "/api/v1/lots")
        events: Counter[str] = Counter()
        for lot in lots:
            for event in _all(client, f"/api/v1/lots/{lot['code']}/history"):
                events[event["event_type"]] += 1
        tools = _all(client, "/api/v1/equipment")
    return {
        "plans": len(plans),
        "released_by_plans": sum(p["released"] for p in plans),
        "lots": len(lots),
        "lots_by_state": dict(Counter(lot["state"] for lot in lots)),
        "lots_by_fab": dict(Counter(lot["fab"] for lot in lots)),
        "track_ins": events["TRACK_IN"],
        "moves": events["TRACK_OUT"],
        "holds": events["HOLD"],
        "completed": sum(1 for lot in lots if lot["state"] == "Completed"),
        "tools_by_state": dict(Counter(t["e10_state"] for t in tools)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="supervisor")
    parser.add_argument("--password", default="change-me-supervisor")
    parser.add_argument("--after", type=float, default=0, help="wait this long first (s)")
    args = parser.parse_args()
    time.sleep(args.after)
    figures = measure(args.url, args.user, args.password)
    for key, value in figures.items():
        print(f"{key:20} {value}")
    print(json.dumps({"bench": "line_flow", **figures}))


if __name__ == "__main__":
    main()
