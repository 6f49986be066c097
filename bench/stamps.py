"""Every section of docs/benchmarks.md names the code it was measured at, and says whether that code has changed.

    .venv/bin/python -m bench.stamps [--file docs/benchmarks.md]      # `make bench` runs it last

A section's commit is the one its text names ("at commit 58e1d4a"); a section that names none (written before the
benchmarks stamped themselves) gets the commit that first wrote its dated line, from git's history, and a section
with neither (bench/report.py's, dated once above the first heading) the page's own. Each section
then carries one line under its heading, rewritten at each run: that commit, and how many later commits change
the serving code (the packages, the model and the launchers), with the command that lists them. A section whose
count is not zero describes older code: read its figures as of its commit, or rerun its benchmark.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.revision import REPO, head_commit

SERVING_CODE = (
    "adapter_manager",
    "api_shim",
    "lora_core",
    "lora_cluster",
    "model_repository",
    "scripts/run_triton.py",
    "scripts/serve.py",
    "scripts/supervisor.py",
)
NOTE = "_Code:"
UNSTAMPED = ("Plots", "Rerun")  # sections that hold no figures of their own
NAMED_COMMIT = re.compile(r"\bat commit ([0-9a-f]{7,40})\b")
DATED_LINE = re.compile(r"\b20\d\d-\d\d-\d\d")  # also 2026-11-26T13:08:06


@dataclass(frozen=True)
class Measured:
    commit: str
    date: str
    later_changes: int  # commits after it, up to HEAD, that change SERVING_CODE


def git(*args: str, repo: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def section_commit(lines: list[str], document: Path, repo: Path = REPO) -> str | None:
    """The commit a section names, else the one that first wrote its first dated line; None if neither is found."""
    for line in lines:
        named = NAMED_COMMIT.search(line)
        if named:
            return named.group(1)
    dated = next((line for line in lines if DATED_LINE.search(line) and not line.startswith(NOTE)), None)
    if dated is None:
        return None
    relative = str(document.resolve().relative_to(repo.resolve()))
    found = git("log", "--reverse", "--format=%h", "-S", dated.strip()[:200], "--", relative, repo=repo).split()
    return found[0] if found else None


def measured(commit: str, head: str, repo: Path = REPO) -> Measured:
    date = git("show", "-s", "--format=%ad", "--date=format:%Y-%m-%d", commit, repo=repo)
    count = git("rev-list", "--count", f"{commit}..{head}", "--", *SERVING_CODE, repo=repo)
    return Measured(git("rev-parse", "--short", commit, repo=repo), date, int(count))


def note(found: Measured | None, head: str) -> str:
    if found is None:
        return f"{NOTE} no commit found for these figures; read them as of an unknown version of the code._"
    if found.later_changes == 0:
        return f"{NOTE} measured at {found.commit} ({found.date}); the serving code is unchanged up to {head}._"
    commits = "1 later commit changes" if found.later_changes == 1 else f"{found.later_changes} later commits change"
    return (
        f"{NOTE} measured at {found.commit} ({found.date}). **{commits} the serving code** up to {head} "
        f"(`git log --oneline {found.commit}..{head} -- {' '.join(SERVING_CODE)}`): these "
        f"figures are as of {found.commit}; rerun the benchmark for today's._"
    )


def stamp(text: str, document: Path, repo: Path = REPO) -> str:
    """`text` with each section's code line (re)written."""
    head = (head_commit(repo) or "HEAD").removesuffix("-dirty")
    lines = text.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("## ")]
    out = lines[: headings[0]] if headings else lines
    page_commit = section_commit(out, document, repo)
    for number, start in enumerate(headings):
        end = headings[number + 1] if number + 1 < len(headings) else len(lines)
        body = [line for line in lines[start + 1 : end] if not line.startswith(NOTE)]
        while body and not body[0].strip():
            body.pop(0)
        out += [lines[start], ""]
        if lines[start][3:].strip() not in UNSTAMPED:
            commit = section_commit(body, document, repo) or page_commit
            out += [note(measured(commit, head, repo) if commit else None, head), ""]
        out += body
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    args.file.write_text(stamp(args.file.read_text(), args.file))
    print(f"stamped {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
