"""Dockerfile parsing and per-instruction resolution, against upstream's pinned texts and behaviours
(kleene-behaviours.md §5.2 items 13-56, §5.3; kleened-api.md §4.3). Pure: no process, no file."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleened.core.builder.dockerfile import (
    Arg,
    Cmd,
    Copy,
    DockerfileError,
    Entrypoint,
    Expose,
    From,
    Instruction,
    Label,
    Run,
    User,
    Workdir,
    join_workdir,
    parse,
)
from kleened.core.builder.expand import ExpansionError, quote
from kleened.core.builder.scope import BuildScope


def resolve_all(text: str, buildargs: dict[str, str] | None = None) -> tuple[list[Instruction], BuildScope]:
    """What the builder does: parse, then resolve each instruction in order against one scope."""
    scope = BuildScope(buildargs)
    return [instr.resolve(scope) for instr in parse(text)], scope


def error_of(text: str) -> str:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    return info.value.message


# --- dockerfile_test.exs (behaviours §5.3) ------------------------------------------------------------------------


def test_from_and_from_as() -> None:  # 5.3 item 1
    df = parse("# comment\nFROM lol\n# another\n")
    assert list(df) == [From(line="FROM lol", image="lol")]
    assert parse("FROM lol AS maxlol")[0] == From(line="FROM lol AS maxlol", image="lol", name="maxlol")
    assert parse("from lol as MaxLol")[0].name == "maxlol"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("keyword", "cls"), [("RUN", Run), ("CMD", Cmd), ("ENTRYPOINT", Entrypoint)])
def test_shell_and_exec_forms(keyword: str, cls: type[Run]) -> None:  # 5.3 items 2, 3
    shell = parse(f"FROM x\n{keyword} cat lol.txt")[1]
    assert shell == cls(line=f"{keyword} cat lol.txt", argv=("/bin/sh", "-c", "cat lol.txt"), shell=True)
    exec_ = parse(f'FROM x\n{keyword} ["/bin/cat", "lol.txt"]')[1]
    assert isinstance(exec_, cls)
    assert exec_.argv == ("/bin/cat", "lol.txt")
    assert not exec_.shell


def test_bracket_that_is_not_json_is_shell_form() -> None:
    run = parse("FROM x\nRUN [ -f /etc/x ] && echo yes")[1]
    assert run.argv == ("/bin/sh", "-c", "[ -f /etc/x ] && echo yes")  # type: ignore[attr-defined]
    assert parse('FROM x\nCMD ["a", 1]')[1].shell  # type: ignore[attr-defined]
    assert parse("FROM x\nCMD []")[1].argv == ()  # type: ignore[attr-defined]


def test_copy_json_equals_shell_form() -> None:  # 5.3 item 4
    json_form = parse('FROM x\nCOPY ["a","b","c"]')[1]
    shell_form = parse("FROM x\nCOPY a b c")[1]
    assert isinstance(json_form, Copy)
    assert isinstance(shell_form, Copy)
    assert (json_form.sources, json_form.dest) == (shell_form.sources, shell_form.dest) == (("a", "b"), "c")


def test_user_is_trimmed() -> None:  # 5.3 item 5
    user = parse("FROM x\nUSER  testuser  ")[1]
    assert user == User(line="USER  testuser  ", user="testuser")


REAL_WORLD = r"""
#
# example Dockerfile for https://docs.docker.com/engine/examples/postgresql_service/
#

FROM ubuntu:16.04

# Add the PostgreSQL PGP key to verify their Debian packages.
RUN apt-key adv --keyserver hkp://p80.pool.sks-keyservers.net:80 --recv-keys B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8

RUN echo "deb http://apt.postgresql.org/pub/repos/apt/ precise-pgdg main" > /etc/apt/sources.list.d/pgdg.list

RUN apt-get update && apt-get install -y python-software-properties software-properties-common postgresql-9.3 \
    postgresql-client-9.3 postgresql-contrib-9.3

USER postgres

RUN    /etc/init.d/postgresql start &&\
    psql --command "CREATE USER docker WITH SUPERUSER PASSWORD 'docker';" &&\
    createdb -O docker docker

RUN echo "host all  all    0.0.0.0/0  md5" >> /etc/postgresql/9.3/main/pg_hba.conf

RUN echo "listen_addresses='*'" >> /etc/postgresql/9.3/main/postgresql.conf

EXPOSE 5432

CMD ["/usr/lib/postgresql/9.3/bin/postgres", "-D", "/var/lib/postgresql/9.3/main", "-c", "config_file=/etc/postgresql/9.3/main/postgresql.conf"]
"""  # noqa: E501


def test_real_world_dockerfile() -> None:  # 5.3 item 6
    df = parse(REAL_WORLD)
    assert isinstance(df[0], From)
    assert df.total_steps == 10
    assert df[3].line.endswith("postgresql-9.3     postgresql-client-9.3 postgresql-contrib-9.3")
    assert df[5].argv[2].startswith("/etc/init.d/postgresql start &&    psql")  # type: ignore[attr-defined]


# --- parser rules -------------------------------------------------------------------------------------------------


def test_steps_count_logical_lines() -> None:  # api §4.3
    df = parse("FROM x\n\n# c\nRUN a \\\n  b\n   \nCMD c\n")
    assert df.total_steps == 3
    assert [df.status(i) for i in range(3)] == ["Step 1/3 : FROM x", "Step 2/3 : RUN a   b", "Step 3/3 : CMD c"]


def test_comments_and_blank_lines_inside_continuation_are_skipped() -> None:
    df = parse("FROM x\nRUN echo hello \\\n# comment\n\n    world\n")
    assert df[1].argv == ("/bin/sh", "-c", "echo hello     world")  # type: ignore[attr-defined]


def test_continuation_at_end_of_file_and_crlf() -> None:
    df = parse("\ufeffFROM x\r\nRUN a \\\r\n  b\r\nRUN c \\")
    assert [i.line for i in df] == ["FROM x", "RUN a   b", "RUN c "]


def test_missing_continuation_is_invalid_instruction() -> None:  # item 54
    bad = "  \"this should faile because we omitted the '\\' above\""
    text = f"FROM FreeBSD:testing\nRUN echo\n{bad}\nCMD /usr/bin/uname\n"
    assert error_of(text) == f"error in '{bad}': invalid instruction"


def test_unknown_instruction() -> None:
    assert error_of("FROM x\nBOGUS a b") == "error in 'BOGUS a b': invalid instruction"
    assert error_of("FROM x\nRÜN a") == "error in 'RÜN a': invalid instruction"


def test_non_arg_before_from() -> None:  # item 28
    text = 'ENV testvar=lol\nFROM FreeBSD:testing\nRUN echo "this never happens"\n'
    assert error_of(text) == "'ENV testvar=lol' not permitted before a FROM instruction"
    assert error_of("ARG a\n") == "Dockerfile has no FROM instruction"
    assert error_of("# only a comment\n") == "Dockerfile has no FROM instruction"


def test_invalid_instruction_reported_before_order() -> None:
    assert error_of("ENV a=1\nFROM x\nBOGUS y") == "error in 'BOGUS y': invalid instruction"


@pytest.mark.parametrize("keyword", ["ARG", "ENV"])
def test_invalid_variable_names(keyword: str) -> None:  # item 34
    line = f'{keyword} TEST-VAR="this should fail"'
    assert error_of(f"FROM FreeBSD:testing\n{line}\n") == f"ENV/ARG variable name is invalid on line: {line}"
    assert error_of(f"FROM x\n{keyword} 1abc=1").startswith("ENV/ARG variable name is invalid")
    assert error_of(f"FROM x\n{keyword} =1").startswith("ENV/ARG variable name is invalid")


def test_one_character_names_are_valid() -> None:
    assert parse("FROM x\nARG a\nENV b=1")[2].pairs == (("b", "1"),)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("RUN", "RUN requires an argument"),
        ("RUN   ", "RUN requires an argument"),
        ("RUN []", "RUN requires a command"),
        ("RUN --mount=type=ssh make", "RUN --mount=type=ssh is not supported"),
        ("FROM --bogus=linux/amd64 y", "FROM --bogus is not a known flag"),
        ("FROM a b", "FROM takes an image"),
        ("FROM a AS 1bad", "invalid stage name '1bad'"),
        ("COPY a", "COPY requires at least two arguments"),
        ('COPY ["a"]', "COPY requires at least two arguments"),
        ('COPY "a b', "COPY requires at least two arguments: <src>... <dest> (is a quote unterminated?)"),
        ("COPY --chmod=999 a b", "invalid --chmod '999'"),
        ("COPY --from a b", "COPY --from requires a value"),
        ("ENV A", "ENV requires a value"),
        ("EXPOSE 80 http", "invalid port 'http'"),
        ("EXPOSE 70000", "invalid port '70000'"),
        ("EXPOSE 90-80", "invalid port '90-80'"),
        ("LABEL a=1 b", "LABEL requires key=value, got 'b'"),
        ("LABEL a", "LABEL requires key=value"),
    ],
)
def test_argument_errors(line: str, reason: str) -> None:
    assert error_of(f"FROM x\n{line}").startswith(f"error in '{line}': {reason}")


# --- ENV notations and build-time failures -----------------------------------------------------------------------


def test_env_notations() -> None:  # item 23
    text = 'FROM x\nENV TEST1=lol\nENV TEST2="testing test"\nENV TEST3=test\\ test\n'
    _, scope = resolve_all(text)
    assert sorted(scope.env) == ["TEST1=lol", "TEST2=testing test", "TEST3=test test"]


def test_env_several_pairs_and_legacy_form() -> None:
    text = "FROM x\nENV A=1 B=\"two words\" C=a\\ b D=\nENV LEGACY  hello   'big' world\n"
    instrs, scope = resolve_all(text)
    assert instrs[1].pairs == (("A", "1"), ("B", "two words"), ("C", "a b"), ("D", ""))  # type: ignore[attr-defined]
    assert scope.env[-1] == "LEGACY=hello   big world"


def test_env_quoted_and_escaped() -> None:  # item 24
    _, scope = resolve_all('FROM x\nENV TEST="\\$5\\$2Fun7BK4thgtd4ao\\$j1kidg9P"\n')
    assert scope.env == ["TEST=$5$2Fun7BK4thgtd4ao$j1kidg9P"]


def test_env_seen_by_later_runs() -> None:  # item 26
    text = 'FROM x\nENV TEST=testvalue\nRUN printenv\nENV TEST="a new test value for TEST"\nENV TEST2=test2value\n'
    _, scope = resolve_all(text)
    assert sorted(scope.env) == ["TEST2=test2value", "TEST=a new test value for TEST"]


def test_trailing_comment_fails_at_build_time() -> None:  # item 56
    df = parse('FROM FreeBSD:testing\nENV TEST="something" # You cannot make comments like this.\n')
    assert [df.status(i) for i in range(2)] == [
        "Step 1/2 : FROM FreeBSD:testing",
        'Step 2/2 : ENV TEST="something" # You cannot make comments like this.',
    ]
    scope = BuildScope()
    df[0].resolve(scope)
    with pytest.raises(ExpansionError) as info:
        df[1].resolve(scope)
    assert info.value.message == (
        'failed environment substition of: ENV TEST="something" # You cannot make comments like this.'
    )


@pytest.mark.parametrize(
    "line",
    ['ENV A="abc', "ENV A='abc", "ENV A=${B", "USER ${U", 'COPY a "b c', 'WORKDIR "/x', 'LABEL a="b', "ARG A='x"],
)
def test_unterminated_quotes_fail_at_build_time(line: str) -> None:
    df = parse(f"FROM x\n{line}\n")
    scope = BuildScope()
    df[0].resolve(scope)
    with pytest.raises(ExpansionError) as info:
        df[1].resolve(scope)
    assert info.value.message == f"failed environment substition of: {line}"


def test_hostile_substitutions_stay_literal() -> None:
    text = "FROM x\nENV X=$(touch /tmp/pwned) Y=`touch /tmp/pwned`\nUSER $(id -u)\nWORKDIR /`x`\nCOPY $(a) /d/\n"
    instrs, scope = resolve_all(text)
    assert scope.env == ["X=$(touch /tmp/pwned)", "Y=`touch /tmp/pwned`"]
    assert instrs[2] == User(line="USER $(id -u)", user="$(id -u)")
    assert instrs[3].path == "/`x`"  # type: ignore[attr-defined]
    assert instrs[4].sources == ("$(a)",)  # type: ignore[attr-defined]


def test_run_and_cmd_are_not_expanded() -> None:  # the container's shell expands them
    instrs, _ = resolve_all('FROM x\nARG A=1\nRUN echo "$A"\nCMD echo $A\nENTRYPOINT ["echo", "$A"]\n')
    assert instrs[2].argv == ("/bin/sh", "-c", 'echo "$A"')  # type: ignore[attr-defined]
    assert instrs[3].argv == ("/bin/sh", "-c", "echo $A")  # type: ignore[attr-defined]
    assert instrs[4].argv == ("echo", "$A")  # type: ignore[attr-defined]


# --- ARG / build args through whole Dockerfiles (items 27-38) ------------------------------------------------------


def test_arg_before_from() -> None:  # item 27
    text = 'ARG testvar\nFROM ${testvar:-doesnotexist}\nRUN echo "succesfully used parent image"\n'
    assert resolve_all(text)[0][1].image == "doesnotexist"  # type: ignore[attr-defined]
    assert resolve_all(text, {"testvar": "FreeBSD:testing"})[0][1].image == "FreeBSD:testing"  # type: ignore[attr-defined]
    assert parse(text).meta_args == (Arg(line="ARG testvar", pairs=(("testvar", None),)),)


def test_buildarg_only_after_declaration_in_user() -> None:  # item 31
    text = "FROM x\nUSER ${username:-ntpd}\nARG username\nUSER $username\n"
    instrs, _ = resolve_all(text, {"username": "games"})
    assert [instrs[1].user, instrs[3].user] == ["ntpd", "games"]  # type: ignore[attr-defined]


def test_arg_in_user_and_copy() -> None:  # items 35, 36
    instrs, _ = resolve_all('FROM x\nARG TESTVAR=ntpd\nUSER $TESTVAR\nARG F="test.txt"\nCOPY $F /root/\n')
    assert instrs[2].user == "ntpd"  # type: ignore[attr-defined]
    assert (instrs[4].sources, instrs[4].dest) == (("test.txt",), "/root/")  # type: ignore[attr-defined]


def test_env_beats_arg_and_persists() -> None:  # items 32, 33, 38
    text = "FROM x\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nCMD echo $CONT_IMG_VER\n"
    assert resolve_all(text)[1].env == ["CONT_IMG_VER=v1.0.0"]
    assert resolve_all(text, {"CONT_IMG_VER": "v.2.0.1"})[1].env == ["CONT_IMG_VER=v.2.0.1"]
    _, scope = resolve_all("FROM x\nARG V\nENV V=v1.0.0\n", {"V": "v2.0.1"})
    assert scope.run_env() == ["V=v1.0.0"]


def test_redeclared_arg_resets() -> None:  # item 37
    _, scope = resolve_all("FROM x\nARG testvar=should_be_overwritten\nARG testvar\n")
    assert scope.run_env() == ["testvar="]


def test_several_args_in_one_instruction() -> None:
    instrs, _ = resolve_all('FROM x\nARG a=1 b="two words" c\n', {"c": "C"})
    assert instrs[1].pairs == (("a", "1"), ("b", "two words"), ("c", "C"))  # type: ignore[attr-defined]


# --- our additions: ENTRYPOINT, EXPOSE, LABEL, stages, COPY flags --------------------------------------------------


def test_expose_label_workdir() -> None:
    text = 'FROM x\nARG P=8080\nEXPOSE 80 53/UDP $P 1000-1010/tcp\nLABEL a=1 "b c"="d e" k=$P\nLABEL old style value\n'
    instrs, _ = resolve_all(text + "WORKDIR /a/$P\n")
    assert isinstance(instrs[2], Expose)
    assert instrs[2].ports == ("80/tcp", "53/udp", "8080/tcp", "1000-1010/tcp")
    assert isinstance(instrs[3], Label)
    assert instrs[3].pairs == (("a", "1"), ("b c", "d e"), ("k", "8080"))
    assert instrs[4].pairs == (("old", "style value"),)  # type: ignore[attr-defined]
    assert instrs[5] == Workdir(line="WORKDIR /a/$P", path="/a/8080")


def test_expose_checks_expanded_ports() -> None:
    df = parse("FROM x\nARG P=web\nEXPOSE $P\n")
    scope = BuildScope()
    with pytest.raises(ExpansionError, match="invalid port 'web'"):
        for instr in df:
            instr.resolve(scope)


def test_join_workdir() -> None:  # item 14
    wd = "/"
    for path in ("/a", "b", "c"):
        wd = join_workdir(wd, path)
    assert wd == "/a/b/c"
    assert join_workdir(wd, "/home/") == "/home"
    assert join_workdir("/a", "../../..") == "/"
    assert join_workdir("/", "//x") == "/x"


def test_stages_and_copy_from() -> None:
    text = (
        "ARG BASE=alpine\nFROM $BASE AS build\nRUN make\n"
        "FROM scratch\nCOPY --from=build --chown=app:app /out/bin /bin/\nCOPY --from=0 /a /b\n"
        "COPY --from=nginx:latest /etc/nginx /etc/nginx\n"
    )
    df = parse(text)
    stages = df.stages
    assert [(s.index, s.name, len(s.instructions)) for s in stages] == [(0, "build", 2), (1, None, 4)]
    assert stages[1].from_.image == "scratch"
    assert df.stage("BUILD") == stages[0]
    assert df.stage("0") == stages[0]
    assert df.stage("nginx:latest") is None
    copy = df[4]
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.chown, copy.sources, copy.dest) == ("build", "app:app", ("/out/bin",), "/bin/")


def test_stage_errors() -> None:
    assert error_of("FROM a AS x\nFROM b AS X") == "error in 'FROM b AS X': duplicate stage name 'x'"
    assert (
        error_of("FROM a AS x\nCOPY --from=x a b")
        == "error in 'COPY --from=x a b': COPY --from=x must refer to an earlier stage"
    )
    assert error_of("FROM a\nCOPY --from=1 a b\nFROM b").endswith("must refer to an earlier stage")


def test_each_stage_starts_clean() -> None:
    text = "FROM a\nARG A=1\nENV E=1\nFROM b\nUSER ${A:-none}-${E:-none}\n"
    instrs, scope = resolve_all(text)
    assert instrs[4].user == "none-none"  # type: ignore[attr-defined]
    assert scope.env == []


def test_copy_json_form_keeps_quotes_and_expands() -> None:
    instrs, _ = resolve_all('FROM x\nARG D=/dst\nCOPY ["it\'s here.txt", "$D/"]\n')
    assert (instrs[2].sources, instrs[2].dest) == (("it's here.txt",), "/dst/")  # type: ignore[attr-defined]


# --- properties ----------------------------------------------------------------------------------------------------

_keywords = st.sampled_from(
    ["FROM", "RUN", "CMD", "ENV", "ARG", "COPY", "USER", "WORKDIR", "EXPOSE", "LABEL", "ENTRYPOINT", "from", "BAD"]
)
_lines = st.one_of(st.text(max_size=40), st.builds(lambda k, a: f"{k} {a}", _keywords, st.text(max_size=40)))


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_arbitrary_text_raises_only_dockerfile_error(text: str) -> None:
    with contextlib.suppress(DockerfileError):
        parse(text)


@given(st.lists(_lines, max_size=12), st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3))
@settings(max_examples=300)
def test_arbitrary_instructions_fail_only_with_our_errors(lines: list[str], buildargs: dict[str, str]) -> None:
    try:
        df = parse("FROM base\n" + "\n".join(lines))
    except DockerfileError:
        return
    assert df.total_steps == len(df.instructions) >= 1
    scope = BuildScope(buildargs)
    for instr in df:
        try:
            resolved = instr.resolve(scope)
        except ExpansionError:
            return
        assert type(resolved) is type(instr)
        assert resolved.line == instr.line


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_values = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=30)


@given(st.dictionaries(_names, _values, min_size=1, max_size=5))
def test_env_values_round_trip(pairs: dict[str, str]) -> None:
    text = "FROM x\nENV " + " ".join(f"{k}={quote(v)}" for k, v in pairs.items()) + "\n"
    instrs, scope = resolve_all(text)
    assert dict(instrs[1].pairs) == pairs  # type: ignore[attr-defined]
    assert scope.env == [f"{k}={v}" for k, v in pairs.items()]


@given(_names, _values)
def test_arg_values_round_trip(name: str, value: str) -> None:
    instrs, _ = resolve_all(f"FROM x\nARG {name}={quote(value)}\n")
    assert instrs[1].pairs == ((name, value),)  # type: ignore[attr-defined]
    instrs, _ = resolve_all(f"FROM x\nARG {name}=default\n", {name: value})
    assert instrs[1].pairs == ((name, value),)  # type: ignore[attr-defined]
