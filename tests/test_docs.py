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


def test_the_readme_settings_table_is_the_declaration():
    from daemon.settings import readme_table

    assert readme_table() in README, ("the README's settings table is out of date: paste the "
                                      "output of `python -m daemon.settings readme`")


def test_stage_command_options_come_from_the_settings():
    from daemon.settings import SETTINGS

    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for s in SETTINGS:
        if s.option:
            flag = "--" + s.name.replace("_", "-")
            command = sub.choices[s.section]
            (action,) = [a for a in command._actions if flag in a.option_strings]
            assert s.help.replace("%", "%%") in action.help


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


@pytest.mark.parametrize("package,forbidden", [("hotfolders", ("daemon", "web_status")),
                                               ("web_status", ("daemon",))])
def test_layers_import_only_downwards(package, forbidden):
    """The engine imports neither the daemon nor the page; the page imports nothing from the
    daemon (the daemon hands create_app what it needs)."""
    import ast

    for path in sorted((PROJECT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.relative_to(PROJECT)} imports {name}"


def test_the_sizing_model_and_its_figures_in_docs_cluster_md():
    """docs/sizing.py simulates the scheduling policy: GPU use equals the offered load when the
    cluster keeps up, a model on an idle cluster is done in its own training time, and the
    tables in docs/cluster.md are what the script prints."""
    result = subprocess.run([sys.executable, str(PROJECT / "docs" / "sizing.py"), "--gpus",
                             "1", "2", "3", "4"], capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in result.stdout.splitlines()[2:]]
    doc = (PROJECT / "docs" / "cluster.md").read_text(encoding="utf-8")
    for gpus, use, _, _, done, pauses in rows:
        assert (f"| {int(gpus)} | {use.strip().replace('%', ' %')} |" in doc and
                f"{done.strip()} | {pauses.strip()} |" in doc), f"docs/cluster.md: {gpus} GPUs"
    sys.path.insert(0, str(PROJECT / "docs"))
    try:
        from sizing import simulate
    finally:
        sys.path.remove(str(PROJECT / "docs"))
    load = (2 * 8 + 2 * 0.5) / 24  # GPU-hours asked a day over the hours of one GPU
    one = simulate(1, 8, 8, 60, 10, 10, 3, 2, 8, 2, 1, 1)
    assert abs(one["gpu_use"] - load) < 0.05
    many = simulate(8, 8, 64, 60, 10, 10, 3, 2, 8, 2, 1, 1)
    assert 8.0 <= many["train_turnaround_p95_h"] < 8.5 and many["convert_wait_p95_h"] == 0
