"""A fingerprint of simulator runs: the SHA-256 of every figure of each run (completed lots with
their times, releases, per-family figures, the WIP series, the counters). A change meant to make
the simulator faster without changing a decision must leave every digest as it was:

    python bench/sim_digest.py --data example --rules fifo,cr,testbed,default --days 60
    python bench/sim_digest.py --data ../shared/data/smt2020/SMT2020_HVLM --rules fifo --days 10

Run it before and after (or with ``git stash``) and compare the lines. The last line is one JSON
object holding every digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mes.simulation import kpi, runner  # noqa: E402
from mes.simulation.rulesets import resolve_all  # noqa: E402


def digest(result: kpi.RunResult) -> str:
    blob = repr(
        (
            result.lots,
            sorted(result.released.items()),
            result.families,
            result.wip,
            result.wip_end,
            result.counters,
        )
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an SMT2020-format folder (or 'example')")
    parser.add_argument("--rules", default="fifo,cr,testbed,default")
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fab = runner._model(args.data)
    digests: dict[str, str] = {}
    for rules in resolve_all(args.rules):
        cpu = time.process_time()
        result = runner.run_one(fab, rules, args.seed, args.days, args.warmup)
        digests[rules.name] = digest(result)
        print(
            f"{rules.name:10} seed {args.seed} {args.days:g} days: {digests[rules.name]} "
            f"({result.counters['decisions']} decisions, {time.process_time() - cpu:.1f} CPU s)"
        )
    print(
        json.dumps(
            {
                "bench": "sim_digest",
                "data": Path(args.data).name,
                "days": args.days,
                "seed": args.seed,
                "digests": digests,
            }
        )
    )


if __name__ == "__main__":
    main()
