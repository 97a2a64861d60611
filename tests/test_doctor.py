"""`facedrop doctor` through the real CLI: every check with a verdict, failures named, exit 1."""
from __future__ import annotations

import re
import socket

from daemonproc import cli

CHECKS = ("python", "packages", "mediapipe models", "tensorflow", "precision", "disk", "root folders",
          "folder events", "status page port", "chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        for name in CHECKS:
            if line.startswith(name + " ") and line[len(name):].split()[0] in ("ok", "warn", "FAIL"):
                rows[name] = line[len(name):].split()[0]
    return rows


def test_doctor_passes_on_a_fresh_root(tmp_path):
    root = tmp_path / "root"
    cli("init", str(root))
    (root / "facedrop.toml").write_text(f"port = {_free_port()}\n")
    result = cli("doctor", "--root", str(root), check=False)
    rows = _rows(result.stdout)
    assert set(rows) == set(CHECKS), result.stdout
    assert all(v in ("ok", "warn") for v in rows.values()), result.stdout
    assert result.returncode == 0 and "all checks passed" in result.stdout
    assert "inotify works" in result.stdout
    measured = re.search(r"auto -> (\w+) \(float32 ([\d.]+) img/s, bfloat16 ([\d.]+) img/s\)",
                         result.stdout)  # timed here: the faster of the two, float32 on a tie
    assert measured, result.stdout
    chosen, f32, bf16 = measured[1], float(measured[2]), float(measured[3])
    assert chosen == ("bfloat16" if bf16 >= 1.05 * f32 else "float32")
    layouts = re.search(  # each timed in a worker process of its own
        r"threads auto -> ([\w-]+) \(shared ([\d.]+) img/s, per-op ([\d.]+) img/s\)", result.stdout)
    assert layouts, result.stdout
    layout, shared, per_op = layouts[1], float(layouts[2]), float(layouts[3])
    assert layout == ("per-op" if per_op >= 1.05 * shared else "shared")
    # the precision was chosen from the figures of the chosen layout
    assert {"shared": shared, "per-op": per_op}[layout] == {"float32": f32, "bfloat16": bf16}[chosen]


def test_doctor_names_what_is_wrong(tmp_path):
    root = tmp_path / "root"
    cli("init", str(root))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (root / "facedrop.toml").write_text(f"port = {port}\nmin_free_gb = 1e9\n"
                                            'gpu = "3"\n')
        result = cli("doctor", "--root", str(root), check=False)
    rows = _rows(result.stdout)
    assert result.returncode == 1, result.stdout
    assert rows["status page port"] == "FAIL" and "taken" in result.stdout
    assert rows["disk"] == "FAIL" and "pauses new work" in result.stdout
    assert rows["tensorflow"] == "FAIL" and "sees no GPU" in result.stdout
    assert "3 check(s) failed: tensorflow, disk, status page port" in result.stdout
    (root / "facedrop.toml").write_text("port = [\n")
    assert cli("doctor", "--root", str(root), check=False).returncode == 3


def test_doctor_without_a_root_says_how_to_make_one(tmp_path):
    result = cli("doctor", "--root", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 1 and "facedrop init" in result.stdout
