"""The commit a benchmark measures: every figure in docs/ names the code it was measured at."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def head_commit(repo: Path = REPO) -> str | None:
    """`repo`'s short HEAD, with `-dirty` when files git tracks differ from it; None where there is no git."""
    if not (repo / ".git").exists() or shutil.which("git") is None:
        return None
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        return None
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
    )
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
