"""`tap goodput simulate` benchmark (README "Goodput"): the replay of a preemption trace,
with its sweep of checkpoint intervals, timed against the issue's budgets on this machine.

Traces: the measured g4dn trace (../shared/traces, 24 nodes, 10.6 h), a synthetic 32-node
11-hour trace and a synthetic 1,000-node 7-day trace (seeded, so every run replays the same
events). Each line prints the wall time, the budget and their ratio; --json writes them.
"""
import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGETS_S = {"g4dn (24 nodes, 10.6 h)": 1.0, "synthetic 32 nodes, 11 h": 1.0, "synthetic 1000 nodes, 7 days": 30.0}


def synthetic(path: Path, nodes: int, hours: float, node_mtbi_h: float, seed: int) -> None:
    """Nodes join at the start; each is reclaimed after an exponential time with mean
    node_mtbi_h and replaced 1-10 minutes later by a new one."""
    rng = random.Random(seed)
    end = int(hours * 3_600_000)
    events = []
    serial = 0
    for _ in range(nodes):
        t = rng.randint(0, 300_000)
        while t < end:
            serial += 1
            name = f"n{serial}"
            events.append((t, "add", name))
            gone = t + int(rng.expovariate(1 / (node_mtbi_h * 3_600_000)))
            if gone >= end:
                break
            events.append((gone, "remove", name))
            t = gone + rng.randint(60_000, 600_000)
    events.sort()
    path.write_text("".join(f"{t},{what},{n}\n" for t, what, n in events))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tap", required=True)
    ap.add_argument("--trace", required=True, help="the measured g4dn trace")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tap-bench-simulate-"))
    s32, s1000 = work / "synthetic-32.csv", work / "synthetic-1000.csv"
    synthetic(s32, 32, 11, 3.0, seed=32)
    synthetic(s1000, 1000, 7 * 24, 20.0, seed=1000)
    cases = [
        ("g4dn (24 nodes, 10.6 h)", args.trace, 8),
        ("synthetic 32 nodes, 11 h", str(s32), 16),
        ("synthetic 1000 nodes, 7 days", str(s1000), 256),
    ]
    figures = []
    for name, trace, nodes in cases:
        cmd = [args.tap, "goodput", "simulate", "--trace", trace, "--nodes", str(nodes), "--step", "1s",
               "--checkpoint-cost", "30s", "--restore-cost", "1m", "--boot", "2m", "--notice-honoured", "0.9",
               "--output", "json"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        took = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        sim = json.loads(out.stdout)
        events = sim["trace"]["events"]
        yd = sim.get("young_daly") or {}
        best = sim["best"]
        fig = {
            "trace": name,
            "events": events,
            "job_nodes": nodes,
            "replays": len(sim["sweep"]) + (1 if yd else 0),
            "wall_s": round(took, 3),
            "budget_s": BUDGETS_S[name],
            "ratio_to_budget": round(took / BUDGETS_S[name], 3),
            "young_daly_interval_s": yd.get("interval_s"),
            "young_daly_goodput_pct": round(yd["goodput"]["goodput_pct"], 1) if yd else None,
            "best_interval_s": best["interval_s"],
            "best_goodput_pct": round(best["goodput"]["goodput_pct"], 1),
        }
        figures.append(fig)
        print(
            f"{name:<30} {events:>6} events, job of {nodes:>3}: {fig['replays']} replays in {took:6.2f} s "
            f"(budget {fig['budget_s']:.0f} s, {fig['ratio_to_budget']:.2f}x of it); "
            f"Young/Daly every {yd.get('interval_s', 0):.0f} s: {fig['young_daly_goodput_pct']}%, "
            f"sweep's best every {best['interval_s']:.0f} s: {fig['best_goodput_pct']}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if all(f["wall_s"] <= f["budget_s"] for f in figures) else 2


if __name__ == "__main__":
    sys.exit(main())
