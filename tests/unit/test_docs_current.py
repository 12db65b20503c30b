"""The docs' claims about what is implemented stay current.

Two tables keep them honest:
- `STILL_MISSING`: every "not yet"-style sentence in the docs must name one of these features,
  and the code must still refuse it with the quoted text (when the refusal goes, so must the claim);
- `IMPLEMENTED`: features a test proves, which no doc sentence may call missing or ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "bench/README.md"])

PENDING = re.compile(r"\bnot (?:\w+ )?yet\b|\byet to come\b|\bnot implemented\b|\bwhen they arrive\b", re.IGNORECASE)
NEGATIVE = re.compile(
    PENDING.pattern + r"|\bis not applied\b|\bare not applied\b|\bis ignored\b|\bare ignored\b|\bnot supported\b",
    re.IGNORECASE,
)

# doc phrase -> (source file, the refusal that proves the feature is still missing)
STILL_MISSING: dict[str, tuple[str, str]] = {
    "FROM scratch": ("daemon/kleened/core/builder/plan.py", "FROM scratch (an empty image) is not supported yet"),
}

# feature (regex on a sentence) -> (test file, text in it that exercises the feature)
IMPLEMENTED: dict[str, tuple[str, str]] = {
    r"\bENTRYPOINT\b": ("tests/integration/test_build_instructions.py", "ENTRYPOINT"),
    r"\bFROM\b.*\bregistry\b|\bregistry\b.*\bFROM\b": ("tests/integration/oci/test_cli.py", "FROM {registry.host}"),
    r"\battach\b": ("tests/integration/test_streams.py", "/attach"),
    r"\bHEALTHCHECK\b|\bhealthchecks?\b": ("tests/integration/test_build_instructions.py", "HEALTHCHECK"),
    r"\bpublish(?:ed)? ports?\b": ("tests/integration/test_networks.py", "public_ports"),
    r"\bklee (?:container )?logs\b": ("tests/integration/test_streams.py", "/logs"),
    r"\bmultiplex\b": ("tests/integration/test_klee_scripts.py", "multiplex"),
}


def sentences(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of every sentence; list items and table rows end one."""
    found: list[tuple[int, str]] = []
    block: list[str] = []
    start = 0
    lines = path.read_text().splitlines()

    def flush() -> None:
        text = " ".join(block)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", text):
            if sentence.strip():
                found.append((start, sentence.strip()))
        block.clear()

    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("- ", "* ", "|", "#", "```")) or re.match(r"\d+\. ", stripped):
            flush()
            start = number
        if stripped:
            if not block:
                start = number
            block.append(stripped)
    flush()
    return found


def test_docs_exist() -> None:
    assert len(DOCS) > 5 and all(path.exists() for path in DOCS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pending_claims_name_a_feature_still_refused(path: Path) -> None:
    stale = []
    for line, text in sentences(path):
        if not PENDING.search(text):
            continue
        names = [name for name in STILL_MISSING if name in text]
        if not names:
            stale.append(f"{path.name}:{line}: {text}")
    assert not stale, "docs call these missing; implement them, or add them to STILL_MISSING:\n" + "\n".join(stale)


@pytest.mark.parametrize("name", sorted(STILL_MISSING))
def test_still_missing_features_are_refused_in_the_code(name: str) -> None:
    source, refusal = STILL_MISSING[name]
    assert refusal in (ROOT / source).read_text(), f"{name} seems implemented now: update the docs that say 'not yet'"


@pytest.mark.parametrize("pattern", sorted(IMPLEMENTED))
def test_implemented_features_have_their_test(pattern: str) -> None:
    test_file, evidence = IMPLEMENTED[pattern]
    assert evidence in (ROOT / test_file).read_text(), f"{test_file} no longer exercises {pattern}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_calls_an_implemented_feature_missing(path: Path) -> None:
    wrong = [
        f"{path.name}:{line}: {text}"
        for line, text in sentences(path)
        if NEGATIVE.search(text) and any(re.search(pattern, text) for pattern in IMPLEMENTED)
        and not any(name in text for name in STILL_MISSING)
    ]
    assert not wrong, "these sentences call a tested feature missing or ignored:\n" + "\n".join(wrong)


def test_the_checks_catch_a_stale_claim(tmp_path: Path) -> None:
    doc = tmp_path / "stale.md"
    doc.write_text("# Build\n\n- ENTRYPOINT is ignored by the builder.\n- Attach is not implemented yet.\n")
    flagged = [text for _line, text in sentences(doc) if NEGATIVE.search(text)
               and any(re.search(pattern, text) for pattern in IMPLEMENTED)]
    assert flagged == ["- ENTRYPOINT is ignored by the builder."]  # "Attach" is capitalised: the regex is exact
    pending = [text for _line, text in sentences(doc) if PENDING.search(text)]
    assert pending == ["- Attach is not implemented yet."]
