"""Documentation: the site builds warning-free, the README's commands and example."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def quick_start_blocks():
    text = (REPO / "README.md").read_text()
    assert "## Quick start" in text
    quick = text.split("## Quick start", 1)[1]
    return re.findall(r"```sh\n(.*?)```", quick, flags=re.S)


def test_readme_quick_start_is_setup_then_tests():
    setup, tests = quick_start_blocks()[:2]
    assert "python3.12 -m venv .venv" in setup
    assert "pip install" in setup and "hetbrian demo" in setup
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert "README.md" in ci and "```sh" in ci  # CI runs the README's blocks


def test_python_version_file():
    assert (REPO / ".python-version").read_text().strip() == "3.12"


def test_readme_python_example_runs():
    text = (REPO / "README.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    namespace = {}
    exec(compile(example, "README example", "exec"), namespace)
    hom, het = namespace["homogeneous"], namespace["heterogeneous"]
    assert hom["data"]["rate"].shape == (1000, 100)
    assert not np.allclose(hom["data"]["rate"], het["data"]["rate"])


@pytest.mark.skipif(
    shutil.which("mkdocs") is None
    and not (Path(sys.executable).parent / "mkdocs").exists(),
    reason="mkdocs is not installed",
)
def test_docs_build_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    command = [
        str(mkdocs) if mkdocs.exists() else "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(tmp_path / "site"),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert (tmp_path / "site" / "concepts" / "index.html").is_file()
