"""The systemd units in config/systemd run commands and flags that exist, and their environment file
sets only settings Volt knows."""

from __future__ import annotations

import configparser
import dataclasses
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, run_volt
from voltci.config import Settings

UNITS = sorted((ROOT / "config" / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path)
    return parser


def test_there_is_a_unit_per_role() -> None:
    assert {p.name for p in UNITS} == {"volt-observer.service", "volt-scheduler.service", "volt-runner@.service",
                                       "volt-web.service"}


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_real_command_with_real_flags(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["Restart"] == "always" and service["EnvironmentFile"] == "/etc/volt/volt.env"
    program, *args = shlex.split(service["ExecStart"].replace("%H", "host").replace("%i", "1"))
    name = Path(program).name
    assert name in ("volt", "volt-observe")
    if name == "volt-observe":
        args = ["observe", *args]
    proc = run_volt(*args, "--help")  # click rejects an unknown flag before it prints the help
    assert proc.returncode == 0, proc.stderr


def test_environment_file_names_only_known_settings() -> None:
    names = {f"VOLT_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    lines = (ROOT / "config" / "systemd" / "volt.env").read_text().splitlines()
    assigned = [line.lstrip("# ").split("=", 1)[0] for line in lines if "=" in line and line.lstrip("# ").startswith("VOLT_")]
    assert assigned and set(assigned) <= names, set(assigned) - names
