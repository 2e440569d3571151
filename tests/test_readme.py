"""The README's commands exist: every ``volslice`` command line in its code blocks parses (and its
``--config`` files and ``key=value`` overrides load), every ``make`` target it names is in the
Makefile, and every relative link in it (and in docs/) points at a file, and at a heading there.

Fast: one argparse parser for every command line, no subprocess."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from volslice.cli import COMMANDS, build_parser, folds_and_overrides
from volslice.config import PROJECT_ROOT, load_config

README = PROJECT_ROOT / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
VOLSLICE_PREFIXES = ("volslice ", ".venv/bin/volslice ", "python -m volslice ", ".venv/bin/python -m volslice ")
SCRIPT = re.compile(r"^(?:\.venv/bin/)?python3? (preprocess/\S+\.py)( .*|)$")


def code_lines(text: str) -> list[str]:
    """The lines of the markdown's fenced code blocks, each joined with its ``\\`` continuations."""
    lines = []
    for block in FENCE.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            pending = ""
            lines.append(line)
        if pending:
            lines.append(pending.strip())
    return lines


def volslice_commands(text: str) -> list[tuple[str, list[str]]]:
    """(the line, the arguments after ``volslice``) of every volslice command in the code blocks,
    the numbered preprocess/ scripts as the subcommand they call."""
    commands = []
    for line in code_lines(text):
        prefix = next((p for p in VOLSLICE_PREFIXES if line.startswith(p)), None)
        script = SCRIPT.match(line)
        if prefix is None and script is None:
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:  # an unclosed quote
            commands.append((line, [f"<{err}>"]))
            continue
        if prefix is not None:
            commands.append((line, words[len(shlex.split(prefix)):]))
        else:
            commands.append((line, [script_command(script.group(1)), *words[2:]]))
    return commands


def script_command(script: str) -> str:
    """The subcommand a numbered script calls (``main(["cache", ...])``), or the missing path."""
    path = PROJECT_ROOT / script
    if not path.exists():
        return f"<no such script: {script}>"
    called = re.search(r'main\(\["([a-z-]+)"', path.read_text())
    return called.group(1) if called else f"<{script} calls no subcommand>"


def command_problem(words: list[str]) -> str | None:
    """Why ``volslice WORDS`` is wrong, or None: argparse refuses it, it elides arguments (``...``),
    or its --config files and overrides do not load."""
    if any(w in ("...", "…") or w.startswith("[") for w in words):
        return "elided or optional arguments ('...', '[...]'): show a command that runs"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(words)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help, --version
            return None
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exit_.code}"
    if not hasattr(args, "overrides") or not isinstance(getattr(args, "config", None), list):
        return None
    folds, overrides = folds_and_overrides(args) if isinstance(getattr(args, "fold", None), list) else (
        None, args.overrides)
    configs = [PROJECT_ROOT / c for c in args.config]
    missing = [str(c) for c in configs if not c.exists()]
    if missing:
        return f"--config {', '.join(missing)} does not exist"
    try:
        load_config(*configs, overrides=overrides)
    except Exception as err:  # noqa: BLE001  (OmegaConf's refusal of a key or value)
        return f"config: {' '.join(str(err).split())}"
    return None


def make_targets() -> set[str]:
    """The Makefile's targets (rules, not variable assignments or special targets)."""
    targets = set()
    for line in (PROJECT_ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.\-][A-Za-z0-9_.\- ]*):(?!=)", line)
        if rule and not line.startswith((".", "\t")):
            targets.update(rule.group(1).split())
    return targets


def make_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(the text, its targets) of every ``make ...`` in the code blocks and the inline code spans."""
    found = []
    candidates = code_lines(text) + INLINE_CODE.findall(text)
    for item in candidates:
        for part in re.split(r"&&|;|\|\|", item):
            words = part.split("#")[0].split()
            if not words or words[0] != "make":
                continue
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            found.append((part.strip(), targets))
    return found


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    anchors, seen = set(), {}
    text = FENCE.sub("", path.read_text())
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_problems(path: Path) -> list[str]:
    """Every relative link of the markdown file ``path`` whose file or heading does not exist."""
    problems = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            problems.append(f"{path.name}: {target}: no heading #{anchor} in {linked.name}")
    return problems


def readme_command_problems(text: str) -> list[str]:
    return [f"{line}: {problem}" for line, words in volslice_commands(text)
            if (problem := command_problem(words)) is not None]


def readme_make_problems(text: str) -> list[str]:
    targets = make_targets()
    return [f"{part}: no target {t!r} in the Makefile" for part, named in make_invocations(text)
            for t in named if t not in targets]


def test_every_volslice_command_in_the_readme_parses():
    text = README.read_text()
    assert len(volslice_commands(text)) >= 2  # the real-data path and the command table show some
    assert readme_command_problems(text) == []


def test_every_make_target_in_the_readme_exists():
    text = README.read_text()
    named = {t for _, targets in make_invocations(text) for t in targets}
    assert {"demo", "test", "pipeline", "kaggle-bundle"} <= named
    assert readme_make_problems(text) == []


def test_the_readme_shows_the_two_commands_and_every_subcommand():
    text = README.read_text()
    lines = code_lines(text)
    assert any(line.startswith("make demo ") or line == "make demo" for line in lines)
    assert any(line.startswith("make test ") or line == "make test" for line in lines)
    missing = [name for name in COMMANDS if f"`volslice {name}" not in text]
    assert missing == [], f"subcommands the README's command table lacks: {missing}"


@pytest.mark.parametrize("page", [README, *sorted((PROJECT_ROOT / "docs").rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(page):
    assert link_problems(page) == []


def test_the_checks_catch_a_broken_readme(tmp_path):
    """Each check fails on a README that is wrong in its way."""
    broken = "\n".join([
        "```bash",
        "volslice train --data ROOT --cache C --folds f.csv --no-such-flag",  # unknown flag
        "volslice cache --out CACHE",  # a required option missing
        "volslice no-such-command --data ROOT",
        "volslice train --data ROOT --cache C --folds f.csv \\",
        "    trian.epochs=3",  # a misspelt key, after a continuation
        "volslice train --data ROOT --cache C --folds f.csv --config configs/no_such.yaml",
        "volslice infer --data ROOT --models RUN ...",
        "python preprocess/09_no_such_step.py --data ROOT",
        "make no-such-target DATA=ROOT",
        "```",
        "",
        "Then `make demo && make nor-this-one`. [missing](docs/no_such_page.md), "
        "[no heading](README.md#no-such-heading).",
    ])
    commands = readme_command_problems(broken)
    assert len(commands) == 7, commands
    assert "--no-such-flag" in commands[0] and "--data" in commands[1] and "no-such-command" in commands[2]
    assert "trian" in commands[3] and "no_such.yaml" in commands[4] and "..." in commands[5]
    assert "09_no_such_step.py" in commands[6]
    assert sorted(p.split("'")[1] for p in readme_make_problems(broken)) == ["no-such-target", "nor-this-one"]
    page = tmp_path / "README.md"
    page.write_text(broken)
    assert len(link_problems(page)) == 2
    good = "```bash\nvolslice train --data ROOT --cache C --folds f.csv --fold 0 train.epochs=3\nmake demo\n```\n"
    assert readme_command_problems(good) == [] and readme_make_problems(good) == []
