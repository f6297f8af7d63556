"""The front door and the pages behind it: the README stays short, every relative link
of the README, docs/ and the recipe READMEs reaches a file (and a heading, for a
``#anchor``), and every ``speechbrain_s4m`` path they name imports."""

import importlib
import re
import warnings
from pathlib import Path
from typing import List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("recipes/*/*/README.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w.])speechbrain_s4m(?:\.\w+)+")
README_MAX_LINES = 250


def anchors(page: Path) -> Set[str]:
    """GitHub's anchors for the headings of ``page``: lower case, punctuation dropped,
    spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(page: Path) -> List[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def resolves(dotted: str) -> bool:
    """``a.b.c.Name`` names an importable module, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the old paths, listed on purpose
                target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_links_reach_their_files_and_headings(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_named_module_paths_import(page):
    named = sorted(set(DOTTED.findall(page.read_text(encoding="utf-8"))))
    assert [name for name in named if not resolves(name)] == []


def test_the_checks_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](missing.md) [no heading](#nowhere)\n")
    assert broken_links(page) == ["missing.md: no such file", "#nowhere: no heading with that anchor"]
    assert resolves("speechbrain_s4m.inference.long_audio.LongAudioSeparator")
    assert not resolves("speechbrain_s4m.inference.long_audio.NoSuchSeparator")
