"""docs/settings.md, generated from the settings registry (lora_core/settings_registry.py).

.venv/bin/python scripts/settings_doc.py           # rewrite docs/settings.md
.venv/bin/python scripts/settings_doc.py --check   # exit 1 when docs/settings.md is not current (make test runs it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lora_core.settings_registry import NOT_SETTINGS, READERS, SETTINGS, Setting  # standard library only

PAGE = REPO / "docs" / "settings.md"

INTRO = """# Settings

Generated from `lora_core/settings_registry.py` by `.venv/bin/python scripts/settings_doc.py`; do not edit by hand
(`make test` fails while this page differs from the registry). Every setting is an environment variable: unset or
empty means its default. A value of the wrong type stops the process that reads it, naming the setting.

- `make serve` and `make cluster` read the environment of the shell that runs them and pass it to their children.
- `docker-compose` takes its values from `.env` or the shell; `.env` holds the common ones, each at its default,
  and `tests/lora_core/test_settings_registry.py` checks that `.env` and the compose files agree with this page.
- "In the images" gives the value a container gets where it differs from the default, and why.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(entry: Setting) -> str:
    return f"`{entry.default}`" if entry.default else "empty"


def render() -> str:
    sections = [INTRO]
    for reader, title in READERS.items():
        group = [s for s in SETTINGS if s.readers[0] == reader]
        if not group:
            continue
        rows = [
            "| Setting | Default | Unit | Read by | What it does | In the images |",
            "|---|---|---|---|---|---|",
        ]
        for entry in group:
            cells = (
                f"`{entry.name}`",
                _default(entry),
                entry.unit,
                ", ".join(entry.readers),
                entry.help,
                f"`{entry.container[0]}`: {entry.container[1]}" if entry.container else "",
            )
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        sections.append(f"## {title}\n\n" + "\n".join(rows) + "\n")
    others = "\n".join(f"- `{name}`: {why}." for name, why in sorted(NOT_SETTINGS.items()))
    sections.append(f"## Read, but no settings\n\n{others}\n")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/settings.md from the settings registry.")
    parser.add_argument("--check", action="store_true", help="only say whether the page is current (exit 1 if not)")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE.relative_to(REPO)} is not current: run .venv/bin/python scripts/settings_doc.py")
            return 1
        print(f"{PAGE.relative_to(REPO)} is current")
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)} ({len(SETTINGS)} settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
