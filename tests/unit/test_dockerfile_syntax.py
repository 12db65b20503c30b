"""The Dockerfile syntax beyond upstream's: parser directives, the escape character, heredocs, flags, and every
instruction Docker has, parsed and resolved; what kleened cannot do is refused at parse time with the line and a
reason. Pure: no process, no file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleened.core.builder.dockerfile import (
    Add,
    Copy,
    DockerfileError,
    From,
    Healthcheck,
    Heredoc,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    Volume,
    parse,
    parse_triggers,
)
from kleened.core.builder.expand import ExpansionError, Syntax
from kleened.core.builder.scope import BuildScope, platform_args


def error_of(text: str) -> str:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    return info.value.message


def resolved(text: str, buildargs: dict[str, str] | None = None, **automatic: str) -> list:
    df = parse(text)
    scope = BuildScope(buildargs, automatic=automatic or platform_args("linux", "amd64"))
    scope.syntax = Syntax(escape=df.directives.escape)
    return [instr.resolve(scope) for instr in df]


# --- parser directives and the escape character --------------------------------------------------------------


def test_directives_at_the_top_only() -> None:
    df = parse("# syntax=docker/dockerfile:1.7\n#  Escape = ` \n\nFROM x\n")
    assert (df.directives.syntax, df.directives.escape) == ("docker/dockerfile:1.7", "`")
    late = parse("# a comment\n# syntax=docker/dockerfile:1\nFROM x\n")  # after a comment: just a comment
    assert late.directives.syntax == ""
    assert parse("# unknowndirective=1\n# escape=`\nFROM x").directives.escape == "\\"  # unknown ends them
    assert "only one 'syntax'" in error_of("# syntax=a\n# syntax=b\nFROM x\n")
    assert "escape character must be" in error_of("# escape=x\nFROM x\n")


def test_escape_backtick_continues_lines_and_escapes() -> None:
    df = parse("# escape=`\nFROM x\nRUN echo a `\n  b\nCOPY c:\\dir\\ /dst/\nENV A=1`$B\n")
    assert df[1].argv[-1] == "echo a   b"  # type: ignore[attr-defined]
    copy, env = resolved("# escape=`\nFROM x\nCOPY c:\\dir\\ /dst/\nENV A=1`$B\n")[1:]
    assert copy.sources == ("c:\\dir\\",)  # backslashes are ordinary
    assert env.pairs == (("A", "1$B"),)


def test_continuation_allows_trailing_blanks_but_not_an_escaped_escape() -> None:
    assert parse("FROM x\nRUN a \\  \n  b\n")[1].argv[-1] == "a   b"  # type: ignore[attr-defined]
    assert len(parse("FROM x\nRUN echo \\\\\nRUN b\n")) == 3  # `\\` at the end is an escaped backslash


# --- heredocs --------------------------------------------------------------------------------------------------


def test_run_with_one_heredoc_runs_its_text() -> None:
    run = parse("FROM x\nRUN <<EOF\necho one\n\n# not a comment here\necho two\nEOF\nRUN true\n")[1]
    assert isinstance(run, Run) and run.line == "RUN <<EOF"
    assert run.command() == ["/bin/sh", "-c", "echo one\n\n# not a comment here\necho two\n"]
    assert run.command(["/bin/bash", "-eu", "-c"])[:3] == ["/bin/bash", "-eu", "-c"]


def test_run_heredoc_with_a_shebang_is_a_script() -> None:
    run = parse("FROM x\nRUN <<-SCRIPT\n\t#!/bin/sh\n\techo $0\n\tSCRIPT\n")[1]
    assert isinstance(run, Run) and run.script == Heredoc(name="SCRIPT", body="\t#!/bin/sh\n\techo $0\n",
                                                          chomp=True)
    assert run.command() == ["/bin/sh", "-c", "/dev/pipes/SCRIPT"] and run.script.content.startswith("#!/bin/sh")


def test_several_heredocs_go_to_the_shell() -> None:
    run = parse("FROM x\nRUN <<A cat > /a && <<-'B' cat > /b\nhello $X\nA\n\tworld\n\tB\n")[1]
    assert run.argv[-1] == "<<A cat > /a && <<-'B' cat > /b\nhello $X\nA\n\tworld\nB"  # type: ignore[attr-defined]


def test_copy_heredocs_are_files_expanded_unless_quoted() -> None:
    text = ('FROM x\nARG WHO=world\nCOPY <<EOF <<"RAW" <<-TABS /etc/\nhello ${WHO} "quoted" \\$X\nEOF\n'
            "keep $WHO\nRAW\n\tindented\n\tTABS\n")
    copy = resolved(text)[2]
    assert isinstance(copy, Copy) and [s.name for s in copy.sources] == ["EOF", "RAW", "TABS"]
    assert [s.body for s in copy.sources] == ['hello world "quoted" $X\n', "keep $WHO\n", "indented\n"]


def test_unterminated_heredoc_and_heredoc_destination() -> None:
    assert "unterminated heredoc <<EOF" in error_of("FROM x\nRUN <<EOF\necho\n")
    assert "destination cannot be a heredoc" in error_of("FROM x\nCOPY a <<EOF\nx\nEOF\n")


def test_heredoc_words_in_quotes_or_other_instructions_are_text() -> None:
    df = parse('FROM x\nRUN echo "<<EOF"\nENV A="<<EOF"\nRUN cat <<<here\n')
    assert [i.line for i in df] == ['FROM x', 'RUN echo "<<EOF"', 'ENV A="<<EOF"', 'RUN cat <<<here']


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x85\u2028\u2029"
                                      "\x1c\x1d\x1e\x0b\x0c"), max_size=20), max_size=6))
def test_heredoc_bodies_round_trip(lines: list[str]) -> None:
    body = "".join(f"{line}\n" for line in lines if line != "END")
    copy = resolved(f"FROM x\nCOPY <<'END' /f\n{body}END\n")[1]
    assert copy.sources[0].body == body


# --- every instruction ------------------------------------------------------------------------------------------


def test_from_platform_flag_and_automatic_args() -> None:
    arg, frm, stage_arg = resolved("ARG TARGETOS\nFROM --platform=$BUILDPLATFORM base:$TARGETOS AS b\nARG TARGETARCH\n")
    assert frm == From(line=frm.line, image="base:linux", name="b", platform="linux/amd64")
    assert stage_arg.pairs == (("TARGETARCH", "amd64"),) and arg.pairs == (("TARGETOS", "linux"),)
    assert platform_args("linux", "arm", "v7")["TARGETPLATFORM"] == "linux/arm/v7"


def test_run_flags() -> None:
    run = resolved("FROM x\nARG DIR=/root/.cache\nRUN --network=none --mount=type=cache,target=$DIR,id=pip,"
                   "sharing=locked --mount=type=secret,id=tok,env=TOKEN --mount=target=/src,rw pip install\n")[2]
    assert isinstance(run, Run) and run.network == "none" and run.argv[-1] == "pip install"
    cache, secret, bind = run.mounts
    assert (cache.type, cache.target, cache.id, cache.sharing, cache.read_only) == ("cache", "/root/.cache", "pip",
                                                                                    "locked", False)
    assert (secret.id, secret.env, secret.target, secret.mode) == ("tok", "TOKEN", "", None)
    assert (bind.type, bind.read_only) == ("bind", False)
    default = resolved("FROM x\nRUN --mount=type=secret,id=npmrc cat /run/secrets/npmrc\n")[1].mounts[0]
    assert default.target == "/run/secrets/npmrc" and not default.required


@pytest.mark.parametrize(("line", "reason"), [
    ("RUN --mount=type=ssh git clone x", "RUN --mount=type=ssh is not supported"),
    ("RUN --mount=type=nfs,target=/x y", "unknown mount type 'nfs'"),
    ("RUN --mount=type=cache y", "RUN --mount=type=cache needs a target"),
    ("RUN --mount=type=cache,target=/x,sharing=sometimes y", "invalid sharing 'sometimes'"),
    ("RUN --mount=type=cache,target=/x,mode=999 y", "invalid mode '999'"),
    ("RUN --mount=type=tmpfs,target=/x,size=lots y", "invalid size 'lots'"),
    ("RUN --mount=type=secret,id=a/b y", "invalid id 'a/b'"),
    ("RUN --mount=type=bind,target=/x,colour=red y", "unknown option 'colour'"),
    ("RUN --device=nvidia.com/gpu=all y", "RUN --device is not supported"),
    ("RUN --security=insecure y", "RUN --security=insecure is not supported"),
    ("RUN --network=bridge y", "RUN --network=bridge is not supported"),
    ("RUN --frobnicate y", "RUN --frobnicate is not a known flag"),
    ("RUN --mount=type=cache,target=/x", "RUN requires a command"),
    ("ADD https://github.com/moby/buildkit.git#v0.10 /src", "ADD of a Git repository is not supported"),
    ("ADD git@github.com:user/repo.git /src", "ADD of a Git repository is not supported"),
    ("ADD --keep-git-dir=true https://example.com/r.git /src", "ADD --keep-git-dir is not supported"),
    ("ADD --unpack=true https://example.com/a.tgz /x/", "ADD --unpack=true of a URL is not supported"),
    ("COPY https://example.com/a /a", "COPY cannot fetch URLs"),
    ("COPY --chmod=u+q a b", "invalid --chmod 'u+q'"),
    ("COPY --from a b", "COPY --from requires a value"),
    ("COPY --checksum=sha256:00 a b", "COPY --checksum is not a known flag"),
    ("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form"),
    ("STOPSIGNAL SIGNOPE", "invalid signal 'SIGNOPE'"),
    ("STOPSIGNAL 1 2", "STOPSIGNAL takes one signal"),
    ("HEALTHCHECK --interval=5 CMD true", "HEALTHCHECK --interval: invalid duration '5'"),
    ("HEALTHCHECK --interval=10us CMD true", "shorter than 1ms"),
    ("HEALTHCHECK --retries=-1 CMD true", "HEALTHCHECK --retries: expected a number"),
    ("HEALTHCHECK NONE --interval=5s", "HEALTHCHECK NONE takes no other arguments"),
    ("HEALTHCHECK CURL x", "HEALTHCHECK: unknown type 'CURL'"),
    ("ONBUILD ONBUILD RUN x", "ONBUILD is not allowed as an ONBUILD trigger"),
    ("ONBUILD FROM x", "FROM is not allowed as an ONBUILD trigger"),
    ("ONBUILD MAINTAINER me", "MAINTAINER is not allowed as an ONBUILD trigger"),
    ("ONBUILD BOGUS x", "invalid instruction"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
])
def test_unsupported_or_invalid_is_refused_at_parse_time(line: str, reason: str) -> None:
    message = error_of(f"FROM x\n{line}\n")
    assert reason in message and (message.startswith(f"error in '{line}'") or "ONBUILD" in line), message


def test_copy_and_add_flags() -> None:
    copy = parse("FROM x\nCOPY --from=build --chown=1:2 --chmod=u=rwX,go=rX --link --parents --exclude=*.md "
                 "--exclude=tmp/ ./src/./pkg /dst/\n")[1]
    assert isinstance(copy, Copy) and not isinstance(copy, Add)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents, copy.excludes) == (
        "build", "1:2", "u=rwX,go=rX", True, True, ("*.md", "tmp/"))
    add = resolved("FROM x\nADD --checksum=sha256:" + "a" * 64 + " --unpack=false https://e.x/a.tgz /a/\n")[1]
    assert isinstance(add, Add) and add.checksum == "sha256:" + "a" * 64 and add.unpack is False
    with pytest.raises(ExpansionError, match="applies to http"):
        resolved("FROM x\nADD --checksum=sha256:" + "a" * 64 + " local.tgz /a/\n")


def test_settings_instructions() -> None:
    volume, words, signal, number, shell, health, none, maint, onbuild = resolved(
        'FROM x\nENV D=/data\nVOLUME ["$D", "/logs"]\nVOLUME $D/x rel\nSTOPSIGNAL quit\nSTOPSIGNAL 9\n'
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]\nHEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s '
        '--retries=5 CMD ["curl", "-f", "http://localhost/"]\nHEALTHCHECK NONE\nMAINTAINER Jane Doe <j@d.x>\n'
        "ONBUILD COPY . /app/src\n")[2:]
    assert isinstance(volume, Volume) and volume.paths == ("/data", "/logs") and words.paths == ("/data/x", "/rel")
    assert isinstance(signal, StopSignal) and (signal.signal, number.signal) == ("SIGQUIT", "9")
    assert isinstance(shell, Shell) and shell.argv == ("/bin/bash", "-o", "pipefail", "-c")
    assert isinstance(health, Healthcheck) and (health.test, health.interval, health.timeout, health.start_period,
                                                health.retries) == (("CMD", "curl", "-f", "http://localhost/"),
                                                                    90.0, 3.0, 0.0, 5)
    assert none.test == ("NONE",)
    assert isinstance(maint, Maintainer) and isinstance(maint, Label)
    assert maint.pairs == (("maintainer", "Jane Doe <j@d.x>"),)
    assert isinstance(onbuild, Onbuild) and onbuild.trigger == "COPY . /app/src"


def test_onbuild_triggers_parse_back_heredocs_included() -> None:
    onbuild = parse("FROM x\nONBUILD RUN <<EOF\necho from a trigger\nEOF\n")[1]
    assert isinstance(onbuild, Onbuild)
    [run] = parse_triggers([onbuild.trigger])
    assert isinstance(run, Run) and run.command() == ["/bin/sh", "-c", "echo from a trigger\n"]


# --- stages: targets and what each needs -----------------------------------------------------------------------


def test_needed_stages() -> None:
    assert "must refer to an earlier stage" in error_of("FROM a\nRUN --mount=from=later,target=/t x\nFROM b AS later\n")
    df = parse("FROM a AS deps\nFROM a AS unused\nRUN false\nFROM deps AS build\nFROM a AS tools\n"
               "RUN --mount=from=build,target=/t x\nFROM a\nCOPY --from=tools /x /x\n")
    assert df.needed_stages(df.target_stage("")) == {0, 2, 3, 4}
    assert df.needed_stages(df.target_stage("build")) == {0, 2}
    with pytest.raises(DockerfileError, match="target stage 'nope' could not be found"):
        df.target_stage("nope")
    dynamic = parse("FROM a AS one\nFROM a AS two\nARG SRC=one\nCOPY --from=$SRC /x /x\n")
    assert dynamic.needed_stages(dynamic.target_stage("")) == {0, 1}  # unknown until expanded: keep all before


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(list("FROMRUNCOPYADD<>-=\\`'\"# \n\t$:{}[],/.aA1")), max_size=200))
def test_arbitrary_text_raises_only_dockerfile_error(text: str) -> None:
    try:
        df = parse(text)
    except DockerfileError:
        return
    scope = BuildScope({})
    scope.syntax = Syntax(escape=df.directives.escape)
    for instr in df:
        try:
            instr.resolve(scope)
        except ExpansionError:
            return
