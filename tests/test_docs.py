"""README.md and docs/*.md: every relative link resolves, and every command names only flags
its script or tool takes."""
import argparse
import re
import runpy
import shlex
import sys
import warnings

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_:.]*$")  # NAME, N, PATH, HOST:PORT


def _page_id(path):
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def anchor(heading):
    """GitHub's anchor of a heading: lowercase, punctuation dropped except hyphens and
    spaces, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2 ... as on GitHub."""
    seen, found = {}, set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = anchor(match.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def links(path):
    """The relative links of a Markdown file, outside code: ``[(line, target)]``."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text(encoding="utf-8"))
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"`[^`]*`", "", re.sub(r"\[`[^`]*`\]", "[code]", line))  # code spans, not link texts
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                found.append((number, target))
    return found


def broken_links(path):
    broken = []
    for number, target in links(path):
        file, _, fragment = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{_page_id(path)}:{number}: {target}: no such file")
        elif fragment and (resolved.suffix != ".md" or fragment not in anchors(resolved)):
            broken.append(f"{_page_id(path)}:{number}: {target}: no heading #{fragment} there")
    return broken


def test_github_anchors():
    assert anchor("Object localisation (paper 2, section 4.8)") == "object-localisation-paper-2-section-48"
    assert anchor("AVX-512 CPUs and 1x1 strided convolutions") == "avx-512-cpus-and-1x1-strided-convolutions"
    assert anchor("--precise-bn") == "--precise-bn"
    assert anchor("The loss, the metrics, the baselines") == "the-loss-the-metrics-the-baselines"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_docs_relative_links_resolve(page):
    assert links(page), f"{_page_id(page)} links nothing"
    assert broken_links(page) == []


def test_docs_link_check_fails_on_a_missing_file_or_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A heading, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-heading-with-code) [self](#page) `[code](nowhere.md)`\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) [web](https://example.org/x.md)\n"
                    "```bash\necho [in a block](nowhere.md)\n```\n")
    assert broken_links(page) == ["page.md:4: missing.md: no such file",
                                  "page.md:4: other.md#nowhere: no heading #nowhere there"]


# -- commands -------------------------------------------------------------------------------
def bash_commands(path):
    """``[(line, tokens)]``: each command of the page's ```bash blocks, continuation lines
    joined, comments dropped, split at ``&&`` and ``;``."""
    commands = []
    lines = path.read_text(encoding="utf-8").splitlines()
    inside, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        tokens, pending = shlex.split(pending + line, comments=True), ""
        command = []
        for token in tokens + ["&&"]:
            if token in ("&&", ";"):
                if command:
                    commands.append((start, command))
                command = []
            else:
                command.append(token)
    return commands


def target(tokens):
    """``(kind, name, args)`` of a command that runs a script, a tool or a ``tiny_keras``
    module with ``python``, after any ``NAME=value`` assignments; None for any other."""
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        tokens = tokens[1:]
    if len(tokens) < 2 or tokens[0] not in ("python", "python3"):
        return None
    if tokens[1] == "-m" and len(tokens) > 2 and tokens[2].split(".")[0] == "tiny_keras":
        return "module", tokens[2], tokens[3:]
    if re.match(r"^(reproductions|tools)/[\w-]+\.py$", tokens[1]):
        return "script", tokens[1], tokens[2:]
    return None


class _Parser(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _sample_argv(args):
    """The command's arguments as a program sees them: brackets dropped, and of ``a|b`` the first."""
    argv = []
    for token in args:
        token = token.strip("[]")
        if token and token != "|":
            argv.append(token if token.startswith("-") else token.split("|")[0])
    return argv


_PARSERS = {}


def parser_of(kind, name, args, monkeypatch):
    """The argparse parser a script, tool or module builds for ``args``: it is run as
    ``__main__`` until it parses its command line, and stopped there."""
    argv = _sample_argv(args)
    key = (kind, name, argv[0] if argv and not argv[0].startswith("-") else None)
    if key in _PARSERS:
        return _PARSERS[key]

    def capture(self, *_, **__):
        raise _Parser(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(sys, "argv", [name, *argv])
        try:
            if kind == "module":
                with warnings.catch_warnings():  # an earlier test may have imported the module: harmless here
                    warnings.filterwarnings("ignore", r".* found in sys.modules after import of package",
                                            RuntimeWarning)
                    runpy.run_module(name, run_name="__main__", alter_sys=False)
            else:
                patch.syspath_prepend(str((REPO / name).parent))
                runpy.run_path(str(REPO / name), run_name="__main__")
        except _Parser as captured:
            _PARSERS[key] = captured.parser
            return captured.parser
    raise AssertionError(f"{name} {' '.join(args)}: no command line was parsed")


def _options(parser, argv):
    """``{option string: action}`` the parser takes, with those of the subcommand ``argv`` names."""
    options = dict(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = next((a for a in argv if a in action.choices), None)
            assert chosen is not None, f"no subcommand of {sorted(action.choices)} in {argv}"
            options.update(_options(action.choices[chosen], argv))
    return options


def bad_flags(kind, name, args, monkeypatch):
    """The flags of ``args`` the parser does not take, and the values a ``choices`` flag does
    not allow (each ``|`` alternative checked; placeholders such as ``N`` pass)."""
    argv = _sample_argv(args)
    options = _options(parser_of(kind, name, args, monkeypatch), argv)
    bad = []
    tokens = [t.strip("[]") for t in args]
    for i, token in enumerate(tokens):
        if not re.match(r"^--?[A-Za-z]", token):
            continue
        flag, _, value = token.partition("=")
        action = options.get(flag)
        if action is None:
            bad.append(flag)
            continue
        if not value and i + 1 < len(tokens) and action.nargs != 0 and not tokens[i + 1].startswith("-"):
            value = tokens[i + 1]
        if action.choices is not None and value and not PLACEHOLDER.match(value):
            allowed = {str(c) for c in action.choices}
            bad += [f"{flag} {v}" for v in value.split("|") if v and v not in allowed]
    return bad


def _commands():
    found = []
    for page in PAGES:
        for line, tokens in bash_commands(page):
            run = target(tokens)
            if run is not None:
                found.append(pytest.param(*run, id=f"{_page_id(page)}:{line}"))
    return found


def test_docs_have_commands_of_every_script_and_tool():
    named = {p.values[1] for p in _commands()}
    scripts = {f"reproductions/{p.name}" for p in (REPO / "reproductions").glob("*.py")}
    tools = {f"tools/{p.name}" for p in (REPO / "tools").glob("*.py")}
    assert scripts | tools <= named, sorted(scripts | tools - named)
    assert {"tiny_keras.data", "tiny_keras.models"} <= named


@pytest.mark.parametrize("kind, name, args", _commands())
def test_docs_commands_use_flags_their_parser_takes(kind, name, args, monkeypatch):
    if kind == "script":
        assert (REPO / name).is_file(), f"{name}: no such script"
    assert bad_flags(kind, name, args, monkeypatch) == []


def test_flag_check_fails_on_a_flag_or_choice_that_does_not_exist(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("```bash\nKERAS_BACKEND=jax python tools/evaluate.py runs/a --data d.zip \\\n"
                    "    [--tta flip|crops10|crops5] --bogus N  # --also-bogus in a comment\n"
                    "python tools/benchmark.py train [--model main] --paper paper2 && python -m pytest -x\n```\n")
    commands = [target(tokens) for _, tokens in bash_commands(page)]
    assert commands[1:] == [("script", "tools/benchmark.py", ["train", "[--model", "main]", "--paper", "paper2"]),
                            None]
    assert bad_flags(*commands[0], monkeypatch) == ["--tta crops5", "--bogus"]
    # --paper is the augment and evaluate benchmarks' flag, not train's.
    assert bad_flags(*commands[1], monkeypatch) == ["--paper"]


# -- the models table -----------------------------------------------------------------------
def _models_table():
    text = (REPO / "docs" / "models.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (paper\w+) \| (\d+x\d+)(?: \(any\))? \| ([\d,]+) \| ([\d,]+|-) \|", text, re.M)
    return {name: (size, int(params.replace(",", "")), None if paper == "-" else int(paper.replace(",", "")))
            for name, size, params, paper in rows}


def test_models_page_lists_every_classifier_with_the_papers_count():
    from tiny_keras import models

    table = _models_table()
    assert list(table) == list(models.names())
    for name, (size, _, paper) in table.items():
        entry = models.get_entry(name)
        assert (size, paper) == ("{}x{}".format(*entry.input_shape[:2]), entry.paper_params), name


@pytest.mark.slow
def test_models_page_counts_are_the_registrys():
    from tiny_keras import models

    assert {name: params for name, (_, params, _) in _models_table().items()} == {
        name: models.count_params(name) for name in models.names()}
