"""The README and docs/ stay walkable: links resolve, the tour's commands parse, CI's commands stay.

Links and ``#anchors`` follow GitHub's rules (a heading's anchor: lowercase, spaces to ``-``,
punctuation other than ``-`` and ``_`` dropped; repeats get ``-1``, ``-2``). Each tour command
that runs an indvision module is run with ``--help`` in a subprocess, so a renamed module,
subcommand or option shows up here rather than in a newcomer's shell.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
SETUP_COMMANDS = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[train]" && '
    ".venv/bin/python -m indvision.pipeline defect",
    'python3 -m venv .venv && .venv/bin/pip install -e ".[train,dev,scale,serve]" && '
    ".venv/bin/python -m pytest",
)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The page without its fenced code blocks (a ``#`` in a shell comment is not a heading)."""
    return FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page's headings give, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        found.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links and anchors of a page that lead nowhere."""
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    return broken


def test_the_anchor_rule_is_githubs() -> None:
    assert github_anchor("Under attack: the threat table") == "under-attack-the-threat-table"
    assert github_anchor("Batch inference (`edge predict --ray`)") == (
        "batch-inference-edge-predict---ray")
    assert github_anchor("Small training sets, against the linear probe") == (
        "small-training-sets-against-the-linear-probe")


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text("# A page\n\n[ok](#a-page) [gone](b.md) [no](#nowhere)\n", encoding="utf-8")
    assert broken_links(page) == ["b.md (no such file)",
                                  "#nowhere (no heading with anchor #nowhere)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(PROJECT_ROOT)}: {broken_links(page)}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve()
              for t in LINK.findall(README.read_text(encoding="utf-8"))}
    assert not [p.name for p in DOCS if p.resolve() not in linked]


def test_the_readme_fits_on_a_page() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_first_code_block_holds_the_two_setup_commands() -> None:
    """.ci/run runs the second command verbatim; a newcomer copies the first."""
    first = FENCE.search(README.read_text(encoding="utf-8"))
    assert first is not None
    lines = [line.strip() for line in first.group(0).splitlines()[1:-1]]
    assert lines == list(SETUP_COMMANDS)


def _tour() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## A 5-minute tour")
    return text[start:text.index("\n## ", start + 1)]


def tour_commands() -> list[list[str]]:
    """Module and first word (a subcommand or a pipeline name) of every tour command that runs
    ``python -m indvision...``, each once; argparse answers ``--help`` after either."""
    commands = []
    for block in FENCE.findall(_tour()):
        for line in block.splitlines()[1:-1]:
            words = shlex.split(line, comments=True)
            if len(words) < 3 or not words[0].endswith("python") or words[1] != "-m":
                continue
            if not words[2].startswith("indvision"):
                continue
            sub = words[3:4] if len(words) > 3 and not words[3].startswith("-") else []
            if sub and not re.fullmatch(r"\w+", sub[0]):  # a path, not a subcommand
                sub = []
            if [words[2], *sub] not in commands:
                commands.append([words[2], *sub])
    return commands


def test_the_tour_has_its_four_steps() -> None:
    modules = {" ".join(command) for command in tour_commands()}
    assert {"indvision.pipeline defect", "indvision.runs", "indvision.edge predict",
            "indvision.edge serve"} <= modules


@pytest.mark.parametrize("command", tour_commands(), ids=" ".join)
def test_every_tour_command_parses_with_help(command: list[str]) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} --help: {done.stderr[-2000:]}"
    assert "usage:" in done.stdout
