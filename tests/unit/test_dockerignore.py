""".dockerignore parsing and matching with Docker's (moby/patternmatcher) rules. Pure: no file is read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kleene_protocol.dockerignore import DockerIgnore, parse

RULES = parse(
    """# a comment
*.md
!README.md
build
!build/keep.txt
**/*.pyc
/abs/
./dot/../cleaned
a[0-9].txt
x[!a]y
esc\\*aped
  # not a comment: leading blanks make it a pattern

secret/**
!secret/**/public
"""
)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("x.md", True),
        ("README.md", False),
        ("docs/x.md", False),  # `*` does not cross `/`, and Docker does not match basenames anywhere
        ("build", True),
        ("build/a/b", True),  # a pattern matching a parent directory ignores everything below
        ("build/keep.txt", False),
        ("builder", False),
        ("c.pyc", True),
        ("a/b/c.pyc", True),
        ("abs/q", True),
        ("cleaned", True),
        ("dot/cleaned", False),
        ("a5.txt", True),
        ("aa.txt", False),
        ("xby", True),
        ("xay", False),
        ("x/y", False),  # a class never matches `/`
        ("esc*aped", True),
        ("escXaped", False),
        ("# not a comment: leading blanks make it a pattern", True),
        ("secret/key", True),
        ("secret/a/public", False),
        ("secret/public", False),
        ("./x.md", True),
        ("/x.md", True),
        ("", False),
        (".", False),
    ],
)
def test_is_ignored(path: str, ignored: bool) -> None:
    assert RULES.is_ignored(path) is ignored


def test_last_match_wins() -> None:
    rules = parse("*.txt\n!keep.txt\nkeep.txt\n")
    assert rules.is_ignored("keep.txt")
    assert not parse("*.txt\n!keep.txt\n").is_ignored("keep.txt")


def test_double_star_forms() -> None:
    rules = parse("**/node_modules\nlogs/**\na/**/z\n")
    assert rules.is_ignored("node_modules")
    assert rules.is_ignored("x/y/node_modules/pkg/index.js")
    assert rules.is_ignored("logs/2024/x.log")
    assert not rules.is_ignored("logs")  # `logs/**` needs something below `logs`
    assert rules.is_ignored("a/z")
    assert rules.is_ignored("a/b/c/z")
    assert not rules.is_ignored("az")


def test_should_descend() -> None:
    assert RULES.should_descend("src")
    assert RULES.should_descend("build")  # `!build/keep.txt` may bring something back
    assert not RULES.should_descend("abs")  # nothing under abs/ can come back
    assert parse("").should_descend("anything")
    assert RULES.should_descend("secret")  # `!secret/**/public`


def test_filter_and_empty_rules() -> None:
    assert list(RULES.filter(["x.md", "README.md", "src/a.py"])) == ["README.md", "src/a.py"]
    assert parse("\n\n# c\n!\n") == DockerIgnore()


def test_unbalanced_bracket_is_literal() -> None:
    rules = parse("a[b\n[]\n")
    assert rules.is_ignored("a[b")
    assert rules.is_ignored("[]")
    assert not rules.is_ignored("ab")


def test_crlf_and_bom() -> None:
    rules = parse("\ufeff*.log\r\n!keep.log\r\n")
    assert rules.is_ignored("x.log")
    assert not rules.is_ignored("keep.log")


@given(st.text(max_size=200), st.text(max_size=50))
def test_never_fails(text: str, path: str) -> None:
    rules = parse(text)
    assert isinstance(rules.is_ignored(path), bool)
    assert isinstance(rules.should_descend(path), bool)


_segment = st.from_regex(r"[a-z0-9._-]{1,8}", fullmatch=True).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=4), st.lists(_segment, min_size=0, max_size=3))
def test_directory_pattern_covers_its_subtree(directory: list[str], below: list[str]) -> None:
    rules = parse("/".join(directory) + "\n")
    assert rules.is_ignored("/".join(directory + below))
    assert not parse("!" + "/".join(directory) + "\n").is_ignored("/".join(directory + below))


@given(st.lists(_segment, min_size=1, max_size=4))
def test_literal_names_match_only_themselves(parts: list[str]) -> None:
    path = "/".join(parts)
    rules = parse(path.replace("[", "\\[") + "\n")
    assert rules.is_ignored(path)
    assert not rules.is_ignored(path + "x")
