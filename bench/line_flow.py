"""How much a running line has done, read through the API: lots started by the start plans,
moves (track-outs), lots completed, holds, tools by E10 state. For `make run`: start it, wait,
then `python bench/line_flow.py --url http://127.0.0.1:8000` (figures, then one JSON line).

    python bench/line_flow.py --url http://127.0.0.1:8000 --after 75
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

# The standard library only: `make run`'s environment has no dev tools (no httpx).


class Api:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        form = urllib.parse.urlencode({"username": user, "password": password}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/auth/token", form, timeout=30) as answer:
            self.token = json.load(answer)["access_token"]

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(
            f"{self.url}{path}?{query}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def all(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            body = self.get(path, limit=500, offset=len(items))
            items.extend(body["items"])
            if len(items) >= body["total"] or not body["items"]:
                return items


def measure(url: str, user: str, password: str) -> dict[str, Any]:
    api = Api(url, user, password)
    plans = api.all("/api/v1/start-plans")
    lots = api.all("/api/v1/lots")
    events: Counter[str] = Counter()
    for lot in lots:
        for event in api.all(f"/api/v1/lots/{lot['code']}/history"):
            events[event["event_type"]] += 1
    tools = api.all("/api/v1/equipment")
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
