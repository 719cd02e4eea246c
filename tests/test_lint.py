"""The code passes ``ruff check`` with the project's one configuration (ruff.toml: line length
100, pycodestyle + pyflakes) and is as ``ruff format`` writes it, checked on every test run."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "ruff.toml"


def _ruff(*paths, command="check"):
    check = ["--check"] if command == "format" else []
    argv = [sys.executable, "-m", "ruff", command, "--no-cache", "--config", str(CONFIG)]
    return subprocess.run(
        argv + check + [str(p) for p in paths], capture_output=True, text=True, cwd=REPO
    )


def test_the_repository_is_clean():
    result = _ruff(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_repository_is_formatted():
    result = _ruff(REPO, command="format")
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout + result.stderr


def test_the_configuration_reports_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nx = '" + "a" * 100 + "'\n")
    result = _ruff(bad)
    assert result.returncode == 1
    assert "F401" in result.stdout and "E501" in result.stdout
    ok = tmp_path / "ok.py"
    ok.write_text("x = '" + "a" * 94 + "'\n")  # exactly 100 characters
    assert _ruff(ok).returncode == 0
    unformatted = tmp_path / "unformatted.py"
    unformatted.write_text("x = {'a':1}\n")
    result = _ruff(unformatted, command="format")
    assert result.returncode == 1 and "would be reformatted" in result.stdout
