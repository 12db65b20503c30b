"""Dockerfile variable expansion: sh semantics for the supported forms, nothing ever executed, ARG/ENV precedence
(kleene-behaviours.md §5.2 items 23-38, 56). Pure: no process is started."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleened.core.builder.expand import (
    SUBSTITUTION_FAILED,
    ExpansionError,
    Limits,
    expand_word,
    expand_words,
    quote,
    split_words,
)
from kleened.core.builder.scope import BuildScope

ENV = {"A": "a", "E": "", "SP": "x  y", "B": "x:y"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$A", "a"),
        ("${A}", "a"),
        ("$Ab", ""),  # the name is `Ab`, unset
        ("${A}b", "ab"),
        ("$U", ""),
        ("pre-$A-post", "pre-a-post"),
        ("${U:-d}", "d"),
        ("${E:-d}", "d"),
        ("${A:-d}", "a"),
        ("${U-d}", "d"),
        ("${E-d}", ""),
        ("${A:+alt}", "alt"),
        ("${E:+alt}", ""),
        ("${U:+alt}", ""),
        ("${A+alt}", "alt"),
        ("${E+alt}", "alt"),
        ("${U+alt}", ""),
        ("${U:-$A}", "a"),
        ("${U:-${V:-deep}}", "deep"),
        ("${U:-a b}", "a b"),
        ("${U:-}", ""),
        ("${#A}", "1"),
        ("${#U}", "0"),
        ("${U:=w}-$U", "w-w"),
        ("${E=w}", ""),
        ("$SP", "x  y"),  # no field splitting of values
        ("\\$A", "$A"),
        ("\\${A}", "${A}"),
        ("'$A'", "$A"),
        ('"$A"', "a"),
        ('"\\$A"', "$A"),
        ('"a\\b"', "a\\b"),  # inside double quotes only \$ \` \" \\ are escapes
        ('"\\""', '"'),
        ("a\\ b", "a b"),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ("\"${U:-'q'}\"", "'q'"),
        ("${U:-'q r'}", "q r"),
        ('${U:-"q"}', "q"),
        ("$", "$"),
        ("a$", "a$"),
        ("$/x", "$/x"),
        ("$1$9${10}", ""),
        ("$@$*$#$?$$$!$-", ""),  # never set in a build
        ("trailing\\", "trailing\\"),
        ("", ""),
    ],
)
def test_expand_word(text: str, value: str) -> None:
    assert expand_word(text, ENV) == value


@pytest.mark.parametrize(
    "text",
    [
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "$((1+2))",
        "$(echo $(id) 'x)' \")\")",
        "a$(b)c",
        "`echo \\`x\\``",
    ],
)
def test_command_substitution_stays_literal(text: str) -> None:
    assert expand_word(text, ENV) == text
    assert expand_word(f'"{text}"', ENV) == text
    assert expand_words(f"X={text} Y=1", ENV) == [f"X={text}", "Y=1"]


def test_hostile_env_line_is_literal() -> None:
    # The value upstream would have run on the host as root.
    scope = BuildScope()
    scope.begin_stage()
    assert scope.set_env([("X", "$(touch /tmp/pwned)")], line="ENV X=$(touch /tmp/pwned)") == [
        ("X", "$(touch /tmp/pwned)")
    ]
    assert scope.set_env([("Y", "`id`")], line="ENV Y=`id`") == [("Y", "`id`")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"abc', "unterminated double quote"),
        ("'abc", "unterminated single quote"),
        ("${A", "missing '}'"),
        ("${A:-x", "missing '}'"),
        ("$(echo", "unterminated $("),
        ("`echo", "unterminated `"),
        ("${}", "bad or unsupported substitution"),
        ("${A%.txt}", "bad or unsupported substitution"),
        ("${A/a/b}", "bad or unsupported substitution"),
        ("${A:1}", "bad or unsupported substitution"),
        ("${U:?must be set}", "must be set"),
        ("${E:?}", "E: parameter null or not set"),
    ],
)
def test_expansion_errors_carry_upstream_text(text: str, reason: str) -> None:
    with pytest.raises(ExpansionError) as info:
        expand_word(text, ENV, line=f"ENV X={text}")
    assert info.value.message == f"failed environment substition of: ENV X={text}"
    assert info.value.reason.startswith(reason)


def test_set_but_empty_passes_plain_question() -> None:
    assert expand_word("${E?unset}", ENV) == ""


def test_nesting_is_bounded() -> None:
    deep = "${U:-" * 500 + "x" + "}" * 500
    with pytest.raises(ExpansionError) as info:
        expand_word(deep, {})
    assert "nested" in info.value.reason


def test_quotes_false_keeps_quote_characters() -> None:
    assert expand_word('it\'s "$A"', ENV, quotes=False) == 'it\'s "a"'
    assert expand_word("\\$A", ENV, quotes=False) == "$A"


def test_expand_words_splits_before_expanding() -> None:
    assert expand_words('a "b c" $SP d\\ e ""', ENV) == ["a", "b c", "x  y", "d e", ""]
    assert expand_words("  ", ENV) == []


def test_split_words_keeps_raw_text_and_never_fails() -> None:
    assert split_words('A="x y" B=a\\ b C=${U:-1 2} D=$(a b)') == [
        'A="x y"',
        "B=a\\ b",
        "C=${U:-1 2}",
        "D=$(a b)",
    ]
    assert split_words('A=1 B="open  ') == ["A=1", 'B="open']
    assert split_words("") == []


def test_value_limit() -> None:
    limits = Limits(value_bytes=1000, total_bytes=10_000)
    env = {"B": "x" * 600}
    assert expand_word("$B", env, limits=limits) == "x" * 600
    with pytest.raises(ExpansionError, match="larger than 1000 bytes"):
        expand_word("$B$B", env, limits=limits)
    with pytest.raises(ExpansionError, match="larger than 1000 bytes"):
        expand_word("${U:-$B$B}", env, limits=limits)
    with pytest.raises(ExpansionError, match="larger than 1000 bytes"):
        expand_word("é" * 600, {}, limits=limits)  # counted in UTF-8 bytes


def test_doubling_chain_stops_at_the_total_limit() -> None:
    scope = BuildScope(limits=Limits(value_bytes=1 << 20, total_bytes=4 << 20))
    scope.begin_stage()
    scope.set_env([("A", "x" * 1000)], line="ENV A=...")
    with pytest.raises(ExpansionError):
        for _ in range(40):
            scope.set_env([("A", "$A$A")], line="ENV A=$A$A")


def test_huge_build_arg_is_refused() -> None:
    with pytest.raises(ExpansionError, match="build-arg 'BIG' is larger than 1048576 bytes"):
        BuildScope({"BIG": "x" * ((1 << 20) + 1)})
    BuildScope({"OK": "x" * (1 << 20)})
    with pytest.raises(ExpansionError, match="in total"):
        BuildScope({f"A{i}": "x" * (1 << 20) for i in range(9)})


# --- ARG / ENV precedence, behaviours §5.2 items 27-38 ----------------------------------------------------------


def _scope(buildargs: dict[str, str] | None = None) -> BuildScope:
    scope = BuildScope(buildargs)
    scope.begin_stage()
    return scope


def test_meta_arg_only_for_from() -> None:  # item 27
    for buildargs, image in (({}, "doesnotexist"), ({"testvar": "FreeBSD:testing"}, "FreeBSD:testing")):
        scope = BuildScope(buildargs)
        scope.declare_arg("testvar", None, line="ARG testvar")
        assert scope.expand_from("${testvar:-doesnotexist}", line="FROM ...") == image
        scope.begin_stage()
        assert scope.expand("${testvar-unset}", line="RUN") == "unset"  # not visible in the stage
        assert scope.declare_arg("testvar", None, line="ARG testvar") == (buildargs.get("testvar") or "")


def test_meta_arg_default_imported_by_bare_arg_in_stage() -> None:
    scope = BuildScope()
    scope.declare_arg("V", "1.0", line="ARG V=1.0")
    scope.begin_stage()
    assert scope.declare_arg("V", None, line="ARG V") == "1.0"


def test_arg_without_default_is_empty_or_buildarg() -> None:  # item 29
    scope = _scope()
    scope.declare_arg("testvar", None, line="ARG testvar")
    assert scope.expand("lol:$testvar", line="x") == "lol:"
    assert scope.expand("lol:${testvar:-empty}", line="x") == "lol:empty"
    assert "testvar=" in scope.run_env()
    scope = _scope({"testvar": "testval"})
    scope.declare_arg("testvar", None, line="ARG testvar")
    assert scope.expand("lol:${testvar:-empty}", line="x") == "lol:testval"


def test_arg_defaults_and_buildarg_override() -> None:  # item 30
    scope = _scope()
    scope.declare_arg("testvar1", "testval1", line="ARG testvar1=testval1")
    scope.declare_arg("testvar2", '"test val2"', line='ARG testvar2="test val2"')
    assert scope.expand("$testvar1:$testvar2", line="x") == "testval1:test val2"
    scope = _scope({"testvar1": "newval1", "testvar2": "newval2"})
    scope.declare_arg("testvar1", "testval1", line="ARG testvar1=testval1")
    scope.declare_arg("testvar2", '"test val2"', line='ARG testvar2="test val2"')
    assert scope.expand("$testvar1:$testvar2", line="x") == "newval1:newval2"
    assert scope.unused_buildargs() == []


def test_buildarg_applies_only_after_declaration() -> None:  # item 31
    scope = _scope({"username": "games", "other": "x"})
    assert scope.expand("${username:-ntpd}", line="USER ${username:-ntpd}") == "ntpd"
    scope.declare_arg("username", None, line="ARG username")
    assert scope.expand("$username", line="USER $username") == "games"
    assert scope.unused_buildargs() == ["other"]


def test_env_beats_arg() -> None:  # items 32, 38
    for buildargs in ({}, {"CONT_IMG_VER": "v2.0.1"}):
        scope = _scope(buildargs)
        scope.declare_arg("CONT_IMG_VER", None, line="ARG CONT_IMG_VER")
        scope.set_env([("CONT_IMG_VER", "v1.0.0")], line="ENV CONT_IMG_VER=v1.0.0")
        assert scope.expand("$CONT_IMG_VER", line="x") == "v1.0.0"
        assert "CONT_IMG_VER=v1.0.0" in scope.run_env()
        assert "CONT_IMG_VER=v2.0.1" not in scope.run_env()


def test_arg_persists_through_env() -> None:  # item 33
    for buildargs, value in (({}, "v1.0.0"), ({"CONT_IMG_VER": "v.2.0.1"}, "v.2.0.1")):
        scope = _scope(buildargs)
        scope.declare_arg("CONT_IMG_VER", None, line="ARG CONT_IMG_VER")
        scope.set_env([("CONT_IMG_VER", "${CONT_IMG_VER:-v1.0.0}")], line="ENV ...")
        assert scope.env == [f"CONT_IMG_VER={value}"]


def test_redeclared_arg_resets() -> None:  # item 37
    scope = _scope()
    scope.declare_arg("testvar", "should_be_overwritten", line="ARG testvar=should_be_overwritten")
    scope.declare_arg("testvar", None, line="ARG testvar")
    assert scope.expand("empty:$testvar", line="x") == "empty:"


def test_arg_default_is_expanded() -> None:
    scope = _scope()
    scope.declare_arg("A", "one", line="ARG A=one")
    assert scope.declare_arg("B", "${A}-two", line="ARG B=${A}-two") == "one-two"


def test_env_pairs_see_the_scope_before_the_instruction() -> None:
    scope = _scope()
    scope.set_env([("abc", "hello")], line="ENV abc=hello")
    assert scope.set_env([("abc", "bye"), ("def", "$abc")], line="ENV abc=bye def=$abc") == [
        ("abc", "bye"),
        ("def", "hello"),
    ]


def test_stage_starts_from_inherited_env_only() -> None:
    scope = _scope()
    scope.declare_arg("A", "1", line="ARG A=1")
    scope.set_env([("E", "1")], line="ENV E=1")
    scope.begin_stage()
    scope.inherit_env(["PATH=/bin", "E=parent", "E=override"])
    assert scope.env == ["PATH=/bin", "E=override"]
    assert scope.run_env() == ["PATH=/bin", "E=override"]


def test_image_env_excludes_args_run_env_includes_them() -> None:
    scope = _scope()
    scope.declare_arg("A", "1", line="ARG A=1")
    scope.set_env([("E", "2")], line="ENV E=2")
    assert scope.env == ["E=2"]
    assert scope.run_env() == ["A=1", "E=2"]


# --- properties ----------------------------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
_envs = st.dictionaries(_names, st.text(max_size=20), max_size=5)


@given(st.text(max_size=200), _envs)
@settings(max_examples=500)
def test_arbitrary_text_raises_only_expansion_error(text: str, env: dict[str, str]) -> None:
    for quotes in (True, False):
        try:
            expand_word(text, env, quotes=quotes)
        except ExpansionError as exc:
            assert exc.message == SUBSTITUTION_FAILED.format(line=text)
    with contextlib.suppress(ExpansionError):
        expand_words(text, env)
    assert isinstance(split_words(text), list)


@given(st.text(max_size=100))
def test_quote_round_trips(value: str) -> None:
    assert expand_word(quote(value), {"X": "y"}) == value


@given(st.lists(st.text(max_size=30), max_size=6))
def test_quoted_words_round_trip(values: list[str]) -> None:
    text = " ".join(quote(v) for v in values)
    assert expand_words(text, {}) == values
    assert len(split_words(text)) == len(values)


@given(st.text(alphabet=st.characters(blacklist_characters="$\\'\"`"), max_size=100))
def test_plain_text_is_unchanged(text: str) -> None:
    assert expand_word(text, ENV) == text


_inert = st.text(alphabet=st.characters(blacklist_characters="$\\'\"`()"), max_size=40)


@given(_inert, _inert, _envs)
def test_command_substitution_is_never_more_than_its_text(prefix: str, body: str, env: dict[str, str]) -> None:
    for sub in (f"$({body})", f"`{body}`", f"$(({body}))", f"$(a $({body}) b)"):
        assert expand_word(prefix + sub, env) == prefix + sub
        assert expand_word(f'"{sub}"', env) == sub


@given(_names, st.text(max_size=30), st.text(alphabet=st.characters(blacklist_characters="}$\\'\"`"), max_size=10))
def test_default_forms_match_sh(name: str, value: str, word: str) -> None:
    set_, unset = {name: value}, {}
    assert expand_word(f"${{{name}:-{word}}}", set_) == (value or word)
    assert expand_word(f"${{{name}-{word}}}", set_) == value
    assert expand_word(f"${{{name}-{word}}}", unset) == word
    assert expand_word(f"${{{name}:+{word}}}", set_) == (word if value else "")
    assert expand_word(f"${{{name}+{word}}}", set_) == word
    assert expand_word(f"${{{name}+{word}}}", unset) == ""
