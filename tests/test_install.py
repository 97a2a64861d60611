"""The install people use: a wheel built from the checkout, installed outside it, run from there.

`make` uses an editable install, which finds every module in the checkout whatever
`pyproject.toml` says; this test builds the real wheel, installs it into its own target folder
(the dependencies come from the test environment) and runs the console script from a folder
outside the checkout: `--version`, every command's `--help`, `init`, a real `extract` on a
bundled face, and the daemon's status page answering `/healthz` and rendering `/`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from daemon.cli import COMMANDS
from hotfolders.samples import astronaut_path

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the installed ``facedrop`` script, the environment to run it in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist"), str(PROJECT)], check=True, cwd=tmp,
                   capture_output=True)
    (wheel,) = (tmp / "dist").glob("facedrop-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, cwd=tmp, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    env.pop("FACEDROP_ROOT", None)
    return site / "bin" / "facedrop", env


def _run(installed, *args: str, cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    script, env = installed
    return subprocess.run([str(script), *args], cwd=cwd, env={**env, **kw.pop("env", {})},
                          capture_output=True, text=True, check=check, timeout=300, **kw)


def test_the_wheel_holds_every_package_and_runs_from_outside(installed, tmp_path):
    script, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import daemon.commands, hotfolders.plugins.train, web_status;"
         "print(daemon.commands.__file__, hotfolders.plugins.train.__file__, "
         "web_status.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=True)
    site = str(script.parent.parent)
    assert all(f.startswith(site) for f in where.stdout.split()), where.stdout  # not the checkout
    for data in ("web_status/templates/index.html", "web_status/static/style.css",
                 "web_status/static/status.js"):
        assert (Path(site) / data).is_file(), data
    version = _run(installed, "--version", cwd=tmp_path)
    assert version.stdout.startswith("facedrop 0.") and "unknown" not in version.stdout
    top = _run(installed, "--help", cwd=tmp_path).stdout
    assert "exit codes: 0 success" in top and "3 configuration error" in top
    for command in COMMANDS:
        out = _run(installed, command, "--help", cwd=tmp_path).stdout
        assert out.startswith(f"usage: facedrop {command}"), command


def test_init_extract_and_the_page_from_the_wheel(installed, tmp_path):
    root = tmp_path / "root"
    _run(installed, "init", str(root), cwd=tmp_path)
    assert (root / "facedrop.toml").is_file() and (root / "inbox").is_dir()
    faces = tmp_path / "faces"
    _run(installed, "extract", str(astronaut_path()), "-o", str(faces), "--size", "128",
         cwd=tmp_path)
    assert len(list(faces.glob("*.png"))) == 1 and (faces / "alignments.json.gz").is_file()

    script, env = installed
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([str(script), "run", "--port", "0"], cwd=tmp_path,
                            env={**env, "FACEDROP_ROOT": str(root)}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = None
        deadline = time.time() + 120
        while not url and time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                conn = sqlite3.connect(f"{(root / '.facedrop' / 'state.db').as_uri()}?mode=ro",
                                       uri=True)
                url = dict(conn.execute("SELECT key, value FROM daemon")).get("url")  # "" at first
                conn.close()
            except sqlite3.Error:
                pass
            time.sleep(0.3)
        assert url, "the daemon never published its page"
        with urllib.request.urlopen(url + "healthz", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200 and b"facedrop" in resp.read()
        status = _run(installed, "status", "--json", cwd=tmp_path,
                      env={"FACEDROP_ROOT": str(root)})
        assert json.loads(status.stdout)["daemon"]["state"] == "running"
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_exit_codes(installed, tmp_path):
    bad_config = tmp_path / "bad"
    bad_config.mkdir()
    (bad_config / "facedrop.toml").write_text("port = [\n")
    result = _run(installed, "run", "--root", str(bad_config), "--no-web", cwd=tmp_path,
                  check=False)
    assert result.returncode == 3 and "facedrop.toml" in result.stderr
    result = _run(installed, "extract", str(tmp_path / "missing.mp4"), "-o",
                  str(tmp_path / "out"), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "missing.mp4" in result.stderr
    result = _run(installed, "extract", str(astronaut_path()), "-o", str(tmp_path / "o"),
                  "--every-n", "0", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--every-n must be at least 1" in result.stderr
    result = _run(installed, "no-such-command", cwd=tmp_path, check=False)
    assert result.returncode == 2


def test_log_lines_carry_their_level_under_the_journal(installed, tmp_path):
    """systemd sets $JOURNAL_STREAM to stderr's device:inode; lines then start with <N>."""
    root = tmp_path / "root"
    _run(installed, "init", str(root), cwd=tmp_path)
    script, env = installed
    with (tmp_path / "journal").open("wb") as stream:
        st = os.fstat(stream.fileno())
        proc = subprocess.Popen([str(script), "run", "--root", str(root), "--no-web"],
                                cwd=tmp_path, stdout=stream, stderr=stream,
                                env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        try:
            deadline = time.time() + 60
            while b"is watching" not in (tmp_path / "journal").read_bytes():
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.2)
            proc.terminate()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = (tmp_path / "journal").read_text().splitlines()
    assert any(line.startswith("<6>facedrop is watching") for line in lines), lines
    assert all(line.startswith("<") for line in lines if line.strip()), lines


def test_the_service_installer_dry_run(tmp_path):
    result = subprocess.run(["bash", str(PROJECT / "systemd" / "install.sh"), "--dry-run",
                             "--gpu", "--no-start"], capture_output=True, text=True,
                            check=True, timeout=60)
    out = result.stdout
    for step in ("pip wheel", "-m venv /opt/facedrop", "[gpu]", "/etc/facedrop/facedrop.toml",
                 "/etc/systemd/system/facedrop.service",
                 "facedrop.service.d/gpu.conf", "systemctl daemon-reload"):
        assert step in out, (step, out)
    assert "enable --now" not in out
    bad = subprocess.run(["bash", str(PROJECT / "systemd" / "install.sh"), "--bogus"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
