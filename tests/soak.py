"""Soak: run the conformance suites N times in a row and report passes,
failures and the slowest claims. Not collected by pytest (no test_ prefix).

    python tests/soak.py --runs 20 [-- extra pytest args]

Writes reports/soak.json; exits non-zero if any run had a failing claim."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from suite_run import PROJECT, run_once


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", default=str(PROJECT / "reports" / "soak.json"))
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args()
    durations: dict[str, list[float]] = defaultdict(list)
    failures: Counter[str] = Counter()
    medians: dict[tuple[str, str], list[float]] = defaultdict(list)  # (measurement, class) -> each run's median
    units: dict[str, str] = {}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            reports = Path(tmp) / f"run-{i}"
            proc, results, wall = run_once(reports, *args.pytest_args)
            bad = [c["id"] for c in results["checks"] if c["outcome"] in ("failed", "error", "interrupted")]
            for c in results["checks"]:
                durations[c["id"]].append(c["duration_s"])
                for name, figure in c.get("figures", {}).items():
                    if figure.get("samples"):
                        medians[(name, c.get("runtime_class") or "default")].append(figure["median"])
                        units[name] = figure["unit"]
            failures.update(bad)
            ok = proc.returncode == 0 and not bad
            if not ok:  # keep the evidence of a failed run
                kept = Path(args.out).parent / f"soak-run-{i}"
                subprocess.run(["cp", "-r", str(reports), str(kept)], check=False)
                (kept / "pytest-output.txt").write_text(proc.stdout + proc.stderr)
            runs.append({"run": i, "ok": ok, "exit": proc.returncode, "wall_s": round(wall, 1),
                         "summary": results["summary"], "failed": bad, "leftovers": results["run"].get("leftovers")})
            print(f"run {i:3d}/{args.runs}: {'pass' if ok else 'FAIL'} {results['summary']} in {wall:.1f}s"
                  + (f" failed: {bad}" if bad else ""), flush=True)
    slowest = sorted(((max(v), statistics.median(v), k) for k, v in durations.items()), reverse=True)[:5]
    walls = [r["wall_s"] for r in runs]
    summary = {
        "runs": len(runs), "passed_runs": sum(r["ok"] for r in runs),
        "failed_runs": sum(not r["ok"] for r in runs), "failing_claims": dict(failures),
        "wall_s": {"median": statistics.median(walls), "max": max(walls)},
        "slowest_claims": [{"id": k, "max_s": mx, "median_s": md} for mx, md, k in slowest],
        "figures": _figures_across_runs(medians, units),
        "runs_detail": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{summary['passed_runs']} passed, {summary['failed_runs']} failed "
          f"(runs of the full suite; median {summary['wall_s']['median']:.1f}s, max {summary['wall_s']['max']:.1f}s)")
    for s in summary["slowest_claims"]:
        print(f"slowest: {s['id']} max {s['max_s']:.2f}s median {s['median_s']:.2f}s")
    for name, per_class in summary["figures"].items():
        print(f"figure: {name}: " + "; ".join(
            f"{k} {f['median_of_medians']:g} {f['unit']} (runs {f['lowest']:g}-{f['highest']:g})"
            for k, f in per_class.items()))
    return 0 if summary["failed_runs"] == 0 else 1


def _figures_across_runs(medians: dict[tuple[str, str], list[float]], units: dict[str, str]) -> dict:
    """Per measurement and class: the median of the runs' medians and their spread,
    steadier than any single run on a small machine."""
    out: dict[str, dict[str, dict]] = {}
    for (name, runtime_class), values in medians.items():
        out.setdefault(name, {})[runtime_class] = {
            "unit": units[name], "runs": len(values), "median_of_medians": round(statistics.median(values), 3),
            "lowest": min(values), "highest": max(values)}
    return out


if __name__ == "__main__":
    sys.exit(main())
