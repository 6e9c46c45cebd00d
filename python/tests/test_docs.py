"""The README and docs/: every relative link and anchor resolves (scripts/check-docs.py), and
the checker itself catches what it is there to catch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "scripts" / "check-docs.py"
BOUND_S = 60


def run_checker(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECKER), str(root)], capture_output=True, text=True, timeout=BOUND_S
    )


def test_every_relative_link_and_anchor_in_readme_and_docs_resolves() -> None:
    done = run_checker(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("0 failed")


def test_a_broken_link_or_anchor_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Top\n\n[page](docs/page.md#a-heading-with-code) and [gone](docs/gone.md)\n"
        "```\n[not a link](nowhere.md)\n```\n"
        "`[code span](nowhere.md)` [external](https://example.invalid/x)\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## A heading with `code`!\n\n## Twice\n\n## Twice\n\n"
        "[second twice](#twice-1) [no such](#twice-2) [up](../README.md#top) [file](../README.md#nope)\n",
        encoding="utf-8",
    )
    done = run_checker(tmp_path)
    assert done.returncode == 1
    broken = [line for line in done.stdout.splitlines() if ": " in line and "passed" not in line]
    assert sorted(broken) == [
        "README.md:3: docs/gone.md: no such file",
        "docs/page.md:9: #twice-2: no heading #twice-2 in docs/page.md",
        "docs/page.md:9: ../README.md#nope: no heading #nope in README.md",
    ], done.stdout
    assert done.stdout.strip().endswith("3 passed, 3 failed")


def test_every_docs_page_starts_with_what_the_reader_will_be_able_to_do() -> None:
    pages = sorted((REPO / "docs").glob("*.md"))
    assert len(pages) >= 8
    for page in pages:
        paragraphs = page.read_text(encoding="utf-8").split("\n\n")
        assert paragraphs[0].startswith("# "), f"{page.name}: no title"
        assert paragraphs[1].startswith("After this page you "), f"{page.name}: {paragraphs[1][:60]!r}"


def test_the_readme_stays_a_front_page() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    # A few screens: the reference lives in docs/.
    assert len(lines) <= 200, len(lines)
    text = "\n".join(lines)
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README does not link docs/{page.name}"
