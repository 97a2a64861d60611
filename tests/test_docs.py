"""The README and the systemd unit tell the truth: every command and setting is documented,
every option has help text, and systemd itself accepts the unit."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import cli
from daemon import config as cfg

PROJECT = Path(__file__).resolve().parents[1]
README = (PROJECT / "README.md").read_text(encoding="utf-8")
UNIT = PROJECT / "systemd" / "facedrop.service"


def test_every_command_is_in_the_readme():
    for name in cli.COMMANDS:
        assert f"facedrop {name}" in README, f"`facedrop {name}` is not in the README"


def test_every_option_of_every_command_has_help():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(sub.choices) == sorted(cli.COMMANDS)
    for name, command in sub.choices.items():
        assert command.description, f"facedrop {name} has no description"
        for action in command._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"facedrop {name} {action.option_strings or action.dest}: no help"


def test_every_setting_is_in_the_readme_table():
    table = "\n".join(line for line in README.splitlines() if line.startswith("| `"))
    for section in (cfg.Config(), *(kind() for kind in cfg.SECTIONS.values())):
        for name in section.__dataclass_fields__:
            if name == "root" or name in cfg.SECTIONS:
                continue
            assert re.search(rf"`(\[\w+\] )?{name}`", table), \
                f"setting {name} is not in the README's settings table"


def _unit_for_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script (verify checks
    that the binary exists)."""
    script = Path(sys.executable).with_name("facedrop")
    if not script.exists():
        pytest.skip(f"no facedrop console script beside {sys.executable}")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={script}", UNIT.read_text(), flags=re.M)
    unit = tmp_path / "facedrop.service"
    unit.write_text(text)
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit_and_scores_it_hardened(tmp_path):
    unit = _unit_for_here(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    complaints = [line for line in (verify.stdout + verify.stderr).splitlines()
                  if "facedrop.service" in line]
    assert verify.returncode == 0 and not complaints, verify.stdout + verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match, security.stdout[-2000:] + security.stderr
    assert float(match.group(1)) <= 2.0, security.stdout[-3000:]
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "StateDirectory=facedrop", "PrivateTmp=yes",
                 "RestartPreventExitStatus=3", "MemoryMax=", "TasksMax="):
        assert line in text
