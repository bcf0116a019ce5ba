"""The shell commands of the README and docs/*.md work as written, in a shell where the
project's .venv is active (as the README says to make it): every `rnnc COMMAND` names a
command and options rnnc has, every `python FILE` a file and options it takes, every
`make ARGS` targets of the Makefile where it runs, every `pip install` extras and a
constraints file that exist; the cheap ones run, and a console block's output is what
its command prints."""
import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "benchmarks/README.md"] + sorted(
    "docs/" + f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
BIN = os.path.dirname(sys.executable)          # the active environment's bin, as on PATH
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=(?:\$\([^()]*\)|\S+)\s+)+")
SHELL_FENCE = re.compile(r"^```(?:sh|bash|shell|console)\s*$")
# rnnc commands that train or time for a minute: checked, not run
NOT_RUN = {"demo", "bench"}


@dataclass
class Command:
    """One documented command line: where it is, the directory it runs in, its output."""
    page: str
    line: int
    text: str                  # as written, environment assignments included
    cwd: str                   # relative to the repository's root
    expected: tuple = ()       # a console block's output lines

    @property
    def argv(self):
        """The words after the leading VAR=value assignments, comments dropped."""
        return shlex.split(ENV_PREFIX.sub("", self.text), comments=True)

    def __str__(self):
        return "%s:%d" % (self.page, self.line)


def _blocks(path):
    """(first line number, lines) of each shell or console block of a Markdown file."""
    block, start, other = None, 0, False
    with open(os.path.join(ROOT, path)) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("```"):
                if block is not None:
                    yield start, block
                    block = None
                elif other:
                    other = False
                elif SHELL_FENCE.match(line):
                    block, start = [], n + 1
                else:
                    other = True            # a block of another language
            elif block is not None:
                block.append(line)


def _joined(lines, start):
    """(line number, line) with backslash continuations joined."""
    out, pending, first = [], "", start
    for n, line in enumerate(lines, start):
        if not pending:
            first = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    return out


def _commands_of(page):
    """The commands of one page, following `cd` within a block."""
    for start, lines in _blocks(page):
        cwd, console = ".", any(line.startswith("$ ") for line in lines)
        for n, line in _joined(lines, start):
            if console and not line.startswith("$ "):
                continue
            text = line[2:] if console else line
            if not shlex.split(ENV_PREFIX.sub("", text), comments=True):
                continue                        # a comment line
            expected = tuple(_output_after(lines, n - start)) if console else ()
            cmd = Command(page, n, text, cwd, expected)
            if cmd.argv[0] == "cd":
                cwd = os.path.normpath(os.path.join(cwd, cmd.argv[1]))
            yield cmd


def _output_after(lines, i):
    """The output lines a console block shows after its command at index i, those with
    an ellipsis (elided) left out."""
    for line in lines[i + 1:]:
        if line.startswith("$ "):
            break
        if "..." not in line and line.strip():
            yield line


COMMANDS = [cmd for page in PAGES for cmd in _commands_of(page)]


def _program(cmd):
    """'rnnc', 'python', 'make', 'cd' or None (a command this test does not know)."""
    name = os.path.basename(cmd.argv[0])
    if name in ("python", "python3"):
        return "python"
    return name if name in ("rnnc", "make", "cd", "pip") else None


def _of(program):
    return [cmd for cmd in COMMANDS if _program(cmd) == program]


def _env(tmp):
    """The environment of a shell with the venv active, temporary files under tmp."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), TMPDIR=str(tmp))
    env.pop("RNNC_DEBUG", None)
    return env


@functools.lru_cache(maxsize=None)
def _help(*argv):
    """The --help text of a command, which must exit 0."""
    proc = subprocess.run(list(argv) + ["--help"], cwd=ROOT, capture_output=True, text=True,
                          env=_env(ROOT), timeout=300)
    assert proc.returncode == 0, "%s --help failed:\n%s" % (" ".join(argv), proc.stderr[-2000:])
    return proc.stdout


def _options(argv):
    return [a.split("=")[0] for a in argv if a.startswith("--")]


def _rnnc():
    path = os.path.join(BIN, "rnnc")
    assert os.access(path, os.X_OK), "rnnc is not installed in %s (pip install -e .)" % BIN
    return path


def test_the_docs_have_commands_of_each_kind():
    for program in ("rnnc", "python", "make", "cd", "pip"):
        assert _of(program), "no documented %s command found: is the parser broken?" % program


def test_the_readme_starts_with_make_demo_and_make_test():
    first = [cmd.argv for cmd in COMMANDS if cmd.page == "README.md"][:2]
    assert first == [["make", "demo"], ["make", "test"]]


def test_the_readme_says_how_to_use_the_venv():
    assert [". .venv/bin/activate"] == [
        cmd.text.split("#")[0].strip() for cmd in COMMANDS
        if cmd.page == "README.md" and cmd.argv[:1] == ["."]]


@pytest.mark.parametrize("cmd", _of("rnnc"), ids=str)
def test_rnnc_command_and_options_exist(cmd):
    sub = cmd.argv[1]
    text = _help(_rnnc(), sub)
    for opt in _options(cmd.argv[2:]):
        assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), text), (
            "%s: rnnc %s has no option %s" % (cmd, sub, opt))
    for cell in (a for a in cmd.argv[2:] if ".py:" in a):
        path = os.path.join(ROOT, cmd.cwd, cell.split(":")[0])
        assert os.path.isfile(path), "%s: no file %s" % (cmd, cell)


@pytest.mark.parametrize("cmd", _of("python"), ids=str)
def test_python_file_and_options_exist(cmd):
    if cmd.argv[1] in ("-c", "-m"):
        pytest.skip("not a file")
    path = os.path.join(ROOT, cmd.cwd, cmd.argv[1])
    assert os.path.isfile(path), "%s: no file %s" % (cmd, cmd.argv[1])
    text = _help("python", path)
    for opt in _options(cmd.argv[2:]):
        assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), text), (
            "%s: %s has no option %s" % (cmd, cmd.argv[1], opt))


@pytest.mark.parametrize("cmd", _of("make") + _of("cd"), ids=str)
def test_make_targets_and_directories_exist(cmd, tmp_path):
    if cmd.argv[0] == "cd":
        assert os.path.isdir(os.path.join(ROOT, cmd.cwd)), "%s: no directory" % cmd
        return
    proc = subprocess.run(["make", "-n", "-C", os.path.join(ROOT, cmd.cwd)] + cmd.argv[1:],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, "%s: %s\n%s" % (cmd, cmd.text, proc.stderr[-2000:])


def _extras():
    """The optional-dependency groups pyproject.toml declares."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


@pytest.mark.parametrize("cmd", _of("pip"), ids=str)
def test_pip_extras_and_constraints_exist(cmd):
    args = cmd.argv[2:]
    for flag, value in zip(args, args[1:]):
        if flag == "-c":
            assert os.path.isfile(os.path.join(ROOT, cmd.cwd, value)), "%s: no %s" % (cmd, value)
    for spec in args:
        extras = re.fullmatch(r"\.\[([\w,-]+)\]", spec)
        if extras:
            missing = set(extras.group(1).split(",")) - _extras()
            assert not missing, "%s: pyproject.toml has no extra %s" % (cmd, missing)


def test_examples_c_makefile_uses_the_project_venv(tmp_path):
    """Run from a clone where `make demo` made .venv, examples/c needs no activated shell."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text("")
    python.chmod(0o755)
    (tmp_path / "examples").mkdir()
    subprocess.run(["cp", "-r", os.path.join(ROOT, "examples", "c"), str(tmp_path / "examples")],
                   check=True)
    proc = subprocess.run(["make", "-n", "-C", str(tmp_path / "examples" / "c")],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(python) + " save_weights.py" in proc.stdout, proc.stdout


def _workdir(tmp_path, cwd):
    """A directory where the repository's folders are visible (links), so that a command
    finds examples/ and tests/ while what it writes lands in tmp_path."""
    for name in os.listdir(ROOT):
        full = os.path.join(ROOT, name)
        if os.path.isdir(full) and not name.startswith(".") and name != "rnncompiler":
            os.symlink(full, tmp_path / name)
    return tmp_path / cwd


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in _of("rnnc") if c.argv[1] not in NOT_RUN], ids=str)
def test_rnnc_command_runs_as_written(cmd, tmp_path):
    _rnnc()
    proc = subprocess.run(["bash", "-c", cmd.text], cwd=_workdir(tmp_path, cmd.cwd),
                          capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    printed = proc.stdout + proc.stderr
    if cmd.expected and cmd.expected[0].startswith("rnnc: "):
        assert proc.returncode == 2, printed          # an error the page shows
    else:
        assert proc.returncode == 0, "%s: %s\n%s" % (cmd, cmd.text, printed[-3000:])
    for line in cmd.expected:
        assert line in printed, "%s: the page shows %r; the command printed:\n%s" % (
            cmd, line, printed[-3000:])


@pytest.mark.slow
def test_examples_c_make_check_runs_as_written(tmp_path):
    """`cd examples/c && make check`, its build directory moved to tmp_path."""
    proc = subprocess.run(["make", "check", "BUILD=" + str(tmp_path / "build")],
                          cwd=os.path.join(ROOT, "examples", "c"), capture_output=True,
                          text=True, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
