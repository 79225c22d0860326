"""Every command the README tells a user to type exists in what `make setup` installs: make
targets in the Makefile, console scripts (hf, wandb...) in .venv/bin answering --help, modules
that `python -m` can run."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    blocks = [block.replace("\\\n", " ") for block in blocks]  # a command continued on the next line
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_readme_shows_commands():
    assert len(readme_commands()) >= 6


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w)[:60])
def test_readme_command_exists(words):
    words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value and ARGS="..."
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
        assert set(words[1:]) <= targets, f"no such make target: {set(words[1:]) - targets}"
    elif words[0].endswith("python") and words[1] == "-m":
        proc = subprocess.run([sys.executable, "-c", f"import importlib.util as u; assert u.find_spec('{words[2]}')"],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"no module {words[2]}"
    else:  # a console script the project installs: it must exist and take its subcommand
        exe = BIN / words[0]
        assert exe.exists(), f"{words[0]} is not installed by make setup"
        sub = [w for w in words[1:] if not w.startswith("-")]
        proc = subprocess.run([str(exe), *sub, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-500:]
