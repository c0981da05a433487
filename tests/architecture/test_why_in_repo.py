"""The *why* lives in this repository: no comment or doc points at a document that is not in it.

Code comments and docs cite reasons either in place or as numbered sections of ``docs/method.md``
(``docs/method.md §1.2``, ``§5 item 7``). This test fails on pointers to outside documents (the team's
planning specs, issue numbers) and on citations of ``docs/method.md`` sections that do not exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt", ".json"}
OUTSIDE = [
    (re.compile(r"\b(?:mlops|architecture|environment|stream-r1-readme)\.md\b"), "a planning spec outside the repo"),
    (re.compile(r"(?<![\w/-])spec/"), "the shared spec folder"),
    (re.compile(r"(?<!docs/)(?<![\w/.-])method\.md\b"), "method.md without docs/ (the outside spec)"),
    (re.compile(r"\bissue \d+\b", re.IGNORECASE), "an issue number (the reason belongs in place)"),
]
CITATION = re.compile(r"docs/method\.md[`']?\s*§\s*(\d+)(?:\.(\d+))?(?:\s*item[s]?\s*(\d+))?")


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines()
            if Path(p).suffix in SUFFIXES or Path(p).name == "Dockerfile"]


def _method_sections() -> dict[str, set[int]]:
    """Numbered sections of docs/method.md (``"1.2"``, ``"5"``) -> the numbers of the list items in their body."""
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    sections: dict[str, set[int]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", line)
        if head:
            current = head.group(1)
            sections[current] = set()
        elif line.startswith("#"):
            current = None
        elif current is not None and (item := re.match(r"^(\d+)\. ", line)):
            sections[current].add(int(item.group(1)))
    return sections


def test_no_pointers_to_documents_outside_the_repo() -> None:
    problems = []
    for path in _tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "tests/architecture/test_why_in_repo.py" or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for pattern, what in OUTSIDE:
                if pattern.search(line):
                    problems.append(f"{rel}:{n}: {what}: {line.strip()[:120]}")
    assert not problems, "\n".join(problems)


def test_cited_method_sections_exist() -> None:
    sections = _method_sections()
    assert {"1.2", "3.2", "3.3", "5"} <= set(sections) and max(sections["5"]) >= 20
    problems = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for major, minor, item in CITATION.findall(line):
                section = f"{major}.{minor}" if minor else major
                if section not in sections:
                    problems.append(f"{rel}:{n}: §{section} is not a section of docs/method.md")
                elif item and int(item) not in sections[section]:
                    problems.append(f"{rel}:{n}: §{section} has no item {item}")
    assert not problems, "\n".join(problems)
