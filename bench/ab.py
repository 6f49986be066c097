"""A/B of commits on the serving path's CPU per request, in alternation on one machine.

    .venv/bin/python -m bench.ab [--rounds 3] [--seconds 6] REV [REV ...]

This machine's speed drifts by tens of percent over minutes, so two figures measured apart say little about a
change. Each REV (a commit, a branch, `HEAD~1`; `.` for the working tree as it is) is checked out into a git
worktree under var/bench/ab/, sharing this checkout's .venv, and each round starts a stack from each tree in
turn (bench/overhead.py's tiny encoder, 8 adapters, `make serve`'s defaults) and measures the CPU per answered
request of each process class with 32 clients and with one (bench/overhead.py's `served`).

Beside each figure it prints the same figure divided by the load generator's own CPU per request: the
generator does the same work in every run, so that ratio is a gauge of the service against the machine's speed
at that moment. The bench/levers.md rows of issue 26 were measured this way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.overhead import LOADS
from bench.stack import REPO

TREES = REPO / "var" / "bench" / "ab"

# Run with each tree's own code (its bench/, testkit/, api_shim/, model_repository/): a fresh interpreter whose
# sys.path starts at the tree. The encoder and adapters are bench/overhead.py's, made once in this checkout.
MEASURE = r"""
import json, sys
from pathlib import Path
tree, seconds, work, loads = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, str(tree))
from bench.stack import REPO, Stack
from bench.e2e import ADAPTERS
from bench.floors import stack_roots
from bench.overhead import MAX_LENGTH, served
from testkit.texts import short_texts
assert REPO == tree, (REPO, tree)
texts = short_texts(256, seed=3)
figures = {}
with Stack(tree / "var" / "ab-stack", work / "tiny-base", work / "models-tiny", instances="auto") as stack:
    stack.load(ADAPTERS, MAX_LENGTH)
    for name, (clients, processes) in loads.items():
        run = served(stack.predict_url, stack_roots(stack), texts, clients, processes, seconds)
        figures[name] = {**run["cpu_ms"], "requests_per_s": run["requests_per_s"]}
print("FIGURES " + json.dumps(figures))
"""


def tree_for(rev: str) -> Path:
    """A worktree at `rev`'s commit (made once: it is named by the commit), or this checkout for '.'."""
    if rev == ".":
        return REPO
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = TREES / commit[:12]
    if not (tree / ".git").exists():
        subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(tree), commit], cwd=REPO, check=True)
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO / ".venv")
    return tree


def measure(tree: Path, seconds: float, work: Path) -> dict[str, dict[str, float]]:
    command = [str(REPO / ".venv" / "bin" / "python"), "-c", MEASURE, str(tree), str(seconds), str(work)]
    done = subprocess.run([*command, json.dumps(LOADS)], cwd=tree, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode or not lines:
        raise RuntimeError(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("FIGURES "))


def line(rev: str, figures: dict[str, dict[str, float]]) -> str:
    parts = []
    for load, cpu in figures.items():
        gauge = cpu["client"]
        parts.append(
            f"{load}: {cpu['requests_per_s']:.0f} req/s, service {cpu['service']:.3f} ms "
            f"({cpu['service'] / gauge:.2f}x the client's), shim {cpu['shim']:.3f} ({cpu['shim'] / gauge:.2f}x), "
            f"tritonserver {cpu['tritonserver']:.3f}, stubs {cpu['stubs']:.3f}, client {gauge:.3f}"
        )
    return f"{rev}: " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", metavar="REV", help="commits to compare; '.' is the working tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "overhead", help="bench.overhead's")
    args = parser.parse_args()
    if not (args.work / "tiny-base" / "config.json").exists():
        print(f"no tiny encoder in {args.work}: run `.venv/bin/python -m bench.overhead` once", file=sys.stderr)
        return 2
    trees = {rev: tree_for(rev) for rev in args.revs}
    for round_ in range(args.rounds):
        for rev, tree in trees.items():
            print(f"round {round_ + 1} {line(rev, measure(tree, args.seconds, args.work))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
