"""pyproject.toml and the requirements files: the console scripts resolve and
run, and the pins are the ones installed."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tomllib

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    PYPROJECT = tomllib.load(_f)

RUNTIME = {"torch", "onnx", "onnxruntime", "onnxscript", "numpy", "opencv-python-headless", "pillow"}
DEV = {"pytest", "ruff", "pydicom"}


def read_pins(name: str) -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                pkg, sep, version = line.partition("==")
                assert sep and version, f"{name}: {line!r} is not pinned with =="
                pins[pkg] = version
    return pins


def test_requirements_are_split_and_read_by_pyproject():
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.txt"]
    assert dynamic["optional-dependencies"]["dev"]["file"] == ["requirements-dev.txt"]
    assert set(read_pins("requirements.txt")) == RUNTIME
    assert set(read_pins("requirements-dev.txt")) == DEV


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_installed_versions_match_pins(name):
    for pkg, version in read_pins(name).items():
        assert importlib.metadata.version(pkg).split("+")[0] == version, pkg


def test_every_command_module_has_a_console_script():
    assert PYPROJECT["tool"]["setuptools"]["packages"] == ["lgms_models"]
    pkg = os.path.join(ROOT, "lgms_models")
    commands = set()
    for name in os.listdir(pkg):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), encoding="utf-8") as f:
                if "\ndef main(" in f.read():
                    commands.add(f"lgms_models.{name[:-3]}:main")
    assert commands == set(PYPROJECT["project"]["scripts"].values())


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_script_runs(script, capsys):
    module, _, func = PYPROJECT["project"]["scripts"][script].partition(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
