"""The systemd units in config/systemd run commands and flags that exist, and their environment file
sets only settings Volt knows. Each unit is hardened as far as its role allows: the runner's keeps
what lets bubblewrap sandbox a build and the runner make per-build cgroups."""

from __future__ import annotations

import configparser
import dataclasses
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from support import ROOT, run_volt

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


@pytest.mark.e2e
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
    assigned = [line.lstrip("# ").split("=", 1)[0] for line in lines
                if "=" in line and line.lstrip("# ").startswith("VOLT_")]
    assert assigned and set(assigned) <= names, set(assigned) - names


# ---------------------------------------------------------------- hardening

RUNNER = "volt-runner@.service"
EVERY_UNIT = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
              "CapabilityBoundingSet": "", "UMask": "0077"}
# A process that runs no build needs no namespaces, cgroups, kernel tunables or unusual system calls.
NOT_A_RUNNER = {"RestrictNamespaces": "yes", "PrivateUsers": "yes", "ProtectKernelTunables": "yes",
                "ProtectControlGroups": "yes", "PrivateDevices": "yes", "SystemCallFilter": "@system-service"}
# What would stop bubblewrap making a step's namespaces and its fresh /proc, or the runner its cgroups.
FIGHTS_THE_SANDBOX = ("RestrictNamespaces", "PrivateUsers", "ProtectKernelTunables", "ProtectKernelLogs",
                      "ProtectProc", "ProcSubset", "SystemCallFilter", "RestrictAddressFamilies")


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_is_hardened_and_keeps_the_redis_url_off_its_command_line(path: Path) -> None:
    service = unit(path)["Service"]
    for key, value in EVERY_UNIT.items():
        assert service.get(key) == value, f"{path.name}: {key}={service.get(key)!r}, want {value!r}"
    assert "redis" not in service["ExecStart"].lower()
    if path.name != RUNNER:
        for key, value in NOT_A_RUNNER.items():
            assert service.get(key) == value, f"{path.name}: {key}={service.get(key)!r}, want {value!r}"


@pytest.mark.parametrize("name", ["volt-observer.service", RUNNER])
def test_units_that_write_may_write_only_the_workspace_dir(name: str) -> None:
    service = unit(ROOT / "config" / "systemd" / name)["Service"]
    env = dict(line.split("=", 1) for line in (ROOT / "config" / "systemd" / "volt.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert service["ReadWritePaths"].split() == [env["VOLT_WORKSPACE_DIR"]] == ["/var/lib/volt"]
    assert service["StateDirectory"] == "volt"


def test_the_runner_unit_lets_bubblewrap_and_the_build_cgroups_work() -> None:
    service = unit(ROOT / "config" / "systemd" / RUNNER)["Service"]
    present = [key for key in FIGHTS_THE_SANDBOX if key in service]
    assert present == [], f"{RUNNER} sets {present}, which stop bubblewrap's namespaces or its /proc"
    assert set(service["Delegate"].split()) >= {"memory", "pids"}
    assert service["ProtectControlGroups"] == "no"


def test_systemd_accepts_every_directive(tmp_path: Path) -> None:
    """systemd-analyze reads each unit (the program swapped for /bin/true) and names any key or value it
    does not understand."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    names = []
    for path in UNITS:
        text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", path.read_text())
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")  # /etc/volt/volt.env is not here
        name = path.name.replace("@.", "@1.")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    proc = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if re.search(r"Unknown|Failed to parse|Invalid|ignoring", line)]
    assert complaints == [], "\n".join(complaints)
