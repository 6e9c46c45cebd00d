#!/usr/bin/env python3
"""Checks every relative link and anchor in README.md and docs/*.md (and the other Markdown
files they link to).

A link `[text](path)` or `[text](path#anchor)` or `[text](#anchor)` must name a file or
folder that exists in the repository, and its anchor a heading of that Markdown file, spelt
as GitHub spells heading anchors. Links with a scheme (https:, mailto:) are not followed.

Usage: scripts/check-docs.py [REPO_ROOT]. Prints one line per broken link and ends with
"N passed, M failed" (one check per link); exits 1 when any link is broken.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# Inline links and images; reference-style definitions ("[x]: path").
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters and digits of any script, and '_'
    return text.replace(" ", "-")


def prose_lines(text: str):
    """The lines outside fenced code blocks, with their 1-based numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path):
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        # Code spans are not links: `[x](y)` inside backticks is text.
        line = re.sub(r"`[^`]*`", "", line)
        for target in INLINE.findall(line):
            yield number, target
        match = DEFINITION.match(line)
        if match:
            yield number, match.group(1)


def check(root: Path) -> tuple[int, list[str]]:
    root = root.resolve()
    todo = [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]
    done: set[Path] = set()
    cache: dict[Path, set[str]] = {}
    checked, broken = 0, []
    while todo:
        page = todo.pop()
        if page in done or not page.is_file():
            continue
        done.add(page)
        where = page.relative_to(root)
        for number, target in links(page):
            if SCHEME.match(target):
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = page if not file_part else (page.parent / file_part).resolve()
            if not dest.exists():
                broken.append(f"{where}:{number}: {target}: no such file")
                continue
            if root not in dest.parents and dest != root:
                broken.append(f"{where}:{number}: {target}: outside the repository")
                continue
            if dest.suffix == ".md" and dest.is_file():
                todo.append(dest)
            if anchor:
                if dest.suffix != ".md" or not dest.is_file():
                    broken.append(f"{where}:{number}: {target}: an anchor into a file that is not Markdown")
                    continue
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if anchor not in cache[dest]:
                    broken.append(f"{where}:{number}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    return checked, broken


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    checked, broken = check(root)
    for line in broken:
        print(line)
    print(f"{checked - len(broken)} passed, {len(broken)} failed")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
