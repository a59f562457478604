"""Comments cite the repository's own documents, and only sections that exist.

Code cites the protocol specification as ``docs/protocol.md §6.2`` (several sections:
``§4.1, §4.2``, ``§7.3-§7.5``); a bare ``§6.3`` in a file that cites the specification means
a section of it too. ``docs/design.md`` is cited by section title: ``docs/design.md, "Storage"``.
Nothing may cite a file that is not in the repository (the design notes and style guide the
project started from live outside it).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "protocol.md"
DESIGN = ROOT / "docs" / "design.md"
SCANNED = ("src", "tests", "benchmarks")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh"}

#: ``## §6 Reliability``, ``### §6.2 Acknowledgements``.
_SPEC_HEADING = re.compile(r"^#{2,6} §(\d+(?:\.\d+)*) ", re.MULTILINE)
_DESIGN_HEADING = re.compile(r"^#{2,6} (.+?)\s*$", re.MULTILINE)
_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
#: Between a file name and its sections, or between two sections: spaces, line breaks (with a
#: comment's ``#``), commas, ``and``, a range's dash.
_GAP = r"(?:\s|#:?|[,;\-–]|and\b|or\b)*"
_SPEC_CITATION = re.compile(
    r"(?P<file>[\w./-]*protocol\.md)`*(?P<sections>(?:" + _GAP + r"§\d+(?:\.\d+)*)*)"
)
_DESIGN_CITATION = re.compile(r'docs/design\.md,\s*(?:#\s*)?"(?P<title>[^"]+)"')
#: A ``§`` that belongs to another document: ``RFC 6455 §7.4.1``, ``issue 5 §2``.
_OTHER_DOCUMENT = re.compile(r"(?:RFC \d+|[Ii]ssue \d+)\s+§\d+(?:\.\d+)*")
#: Files outside the repository that code used to cite.
_OUTSIDE = re.compile(r"DESIGN(?:\.md| §)|STYLE\.md|\.\./shared/|/work/shared")


def _sources() -> list[Path]:
    me = Path(__file__).resolve()
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            wanted = path.suffix in SUFFIXES and "egg-info" not in path.as_posix()
            if wanted and path.is_file() and path.resolve() != me:
                files.append(path)
    return files


def _spec_sections() -> set[str]:
    return set(_SPEC_HEADING.findall(SPEC.read_text(encoding="utf-8")))


def _where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def test_the_specification_has_numbered_sections() -> None:
    sections = _spec_sections()
    assert {"1", "4.1", "6.6", "13.1"} <= sections


def test_protocol_citations_name_existing_sections() -> None:
    sections = _spec_sections()
    problems: list[str] = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        claimed: list[range] = []
        cites_spec = False
        for match in _SPEC_CITATION.finditer(text):
            claimed.append(range(match.start(), match.end()))
            where = _where(path, text, match.start())
            if match["file"] != "docs/protocol.md":
                problems.append(f"{where}: cites {match['file']!r}, not docs/protocol.md")
                continue
            cites_spec = True
            cited = _SECTION.findall(match["sections"])
            if not cited:
                problems.append(f"{where}: cites docs/protocol.md without a section")
            missing = [s for s in cited if s not in sections]
            problems += [f"{where}: docs/protocol.md has no §{s}" for s in missing]
        for match in _OTHER_DOCUMENT.finditer(text):
            claimed.append(range(match.start(), match.end()))
        for match in _SECTION.finditer(text):
            if any(match.start() in span for span in claimed):
                continue
            where = _where(path, text, match.start())
            if not cites_spec:
                problems.append(f"{where}: §{match[1]} of which document?")
            elif match[1] not in sections:
                problems.append(f"{where}: docs/protocol.md has no §{match[1]}")
    assert not problems, "\n".join(problems)


def test_design_citations_name_existing_sections() -> None:
    headings = _DESIGN_HEADING.findall(DESIGN.read_text(encoding="utf-8"))
    # "Performance choices (measured with `benchmarks/`)" is cited as "Performance choices".
    titles = {re.sub(r" \(.*\)$", "", heading) for heading in headings}
    problems = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for match in _DESIGN_CITATION.finditer(text):
            title = " ".join(match["title"].replace("#", " ").split())
            if title not in titles:
                problems.append(f"{_where(path, text, match.start())}: no section {title!r}")
    assert not problems, "\n".join(problems)


def test_nothing_cites_a_file_outside_the_repository() -> None:
    problems = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for match in _OUTSIDE.finditer(text):
            problems.append(f"{_where(path, text, match.start())}: cites {match[0]!r}")
    assert not problems, "\n".join(problems)
