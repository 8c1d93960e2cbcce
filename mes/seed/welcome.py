"""What `make run` prints once the service answers: where to look and how to log in."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from mes.seed.loader import ExampleData, read_example


def wait_until_ready(base_url: str, timeout_s: float) -> bool:
    """Poll ``/readyz`` until it answers 200 (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:
                if answer.status == 200 and json.load(answer).get("status") == "ok":
                    return True
        except (OSError, urllib.error.URLError, ValueError):
            pass  # not listening yet
        time.sleep(0.3)
    return False


def banner(base_url: str, data: ExampleData | None = None) -> str:
    """The console and API addresses, and the example's demo logins (public: change them)."""
    data = data or read_example()
    logins = [u for u in data.users if u.password]
    width = max(len(u.username) for u in logins)
    lines = [
        "",
        f"  The fab is running.  Console: {base_url}/console",
        f"                       API:     {base_url}/docs",
        "",
        "  Demo logins (public, see docs/security.md; change them for anything real):",
        *(
            f"    {u.username:<{width}}  {u.password:<22} {', '.join(r.value for r in u.roles)}"
            for u in logins
        ),
        "",
        f"  Start plans release lots in {', '.join(sorted({p.fab for p in data.start_plans}))}; "
        "Ctrl-C stops the service and the simulated tools.",
        "",
    ]
    return "\n".join(lines)
