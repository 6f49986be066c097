"""bench/stamps.py on a small git repository of its own: each section of a benchmarks page gets the commit it was
measured at and the count of later commits that change the serving code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench import stamps


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "--short", "HEAD")


def test_each_section_names_its_commit_and_the_serving_code_changed_since(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "api_shim").mkdir(parents=True)
    (repo / "docs").mkdir()
    git(repo, "init", "-q")
    (repo / "api_shim" / "app.py").write_text("v = 1\n")
    page = repo / "docs" / "benchmarks.md"
    page.write_text("# Benchmarks\n\nWritten on 2026-11-26T13:08:06.\n\n## Report's\n\n| a | 1 |\n")
    first = commit(repo, "the report")
    (repo / "api_shim" / "app.py").write_text("v = 2\n")
    second = commit(repo, "code")
    page.write_text(
        page.read_text()
        + f"\n## Named\n\nMeasured 2026-12-01 at commit {second}.\n\n## Dated\n\nMeasured 2026-12-02 10:00.\n"
    )
    third = commit(repo, "two sections")
    (repo / "README.md").write_text("not serving code\n")
    commit(repo, "docs only")
    (repo / "api_shim" / "app.py").write_text("v = 3\n")
    head = commit(repo, "code again")

    stamped = stamps.stamp(page.read_text(), page, repo)
    notes = [line for line in stamped.splitlines() if line.startswith(stamps.NOTE)]
    assert len(notes) == 3
    assert f"measured at {first}" in notes[0] and "**2 later commits change the serving code**" in notes[0]
    assert f"measured at {second}" in notes[1] and "**1 later commit changes the serving code**" in notes[1]
    assert f"measured at {third}" in notes[2] and "**1 later commit changes" in notes[2]
    assert all(f"up to {head}" in note for note in notes)
    assert stamps.stamp(stamped, page, repo) == stamped  # rewritten, never stacked
    assert "| a | 1 |" in stamped and "Measured 2026-12-02 10:00." in stamped


def test_a_section_of_unchanged_code_says_so_and_one_without_a_commit_says_that(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    git(repo, "init", "-q")
    page = repo / "docs" / "benchmarks.md"
    page.write_text("# B\n\n## Fresh\n\nMeasured 2026-12-04 at commit 0000000 (no such).\n\n## Plots\n\n![x](x.png)\n")
    commit(repo, "page")
    fresh = page.read_text().replace("at commit 0000000 (no such)", "today")
    page.write_text(fresh)
    head = commit(repo, "fresh")
    stamped = stamps.stamp(fresh, page, repo)
    (note,) = [line for line in stamped.splitlines() if line.startswith(stamps.NOTE)]
    assert note.startswith(f"{stamps.NOTE} measured at {head} (")
    assert note.endswith(f"the serving code is unchanged up to {head}._")
    assert stamped.count(stamps.NOTE) == 1  # Plots holds no figures: no line
    undated = "# B\n\n## Nothing\n\nno date, no commit\n"
    assert "no commit found" in stamps.stamp(undated, page, repo)
