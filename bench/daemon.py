"""Daemon overhead, measured in one run: idle CPU and settle-to-start latency.

Starts `facedrop run` on a temporary root, measures its CPU use while idle (target < 1 % of
one core), then drops files and measures the time from the moment each file had settled (its
last write + the settle time) to its job starting (target < 1 s).

    python bench/daemon.py [--idle 60] [--files 3] [--settle 2]
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        subprocess.run([sys.executable, "-m", "daemon.cli", "init", str(root)], check=True,
                       capture_output=True)
        (root / "facedrop.toml").write_text(f"settle_seconds = {args.settle}\nmin_free_gb = 0.0\n")
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--root", str(root),
                                 "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up: imports, first scan, page server
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.idle)
            idle = (cpu_seconds(proc.pid) - before) / (time.monotonic() - started)
            print(f"idle CPU         {idle:7.2%} of one core over {args.idle:.0f} s "
                  f"({'met' if idle < 0.01 else 'MISSED'}: < 1 %)")
            (root / "inbox" / "bench").mkdir()
            latencies = []
            for i in range(args.files):
                path = root / "inbox" / "bench" / f"clip{i}.mp4"
                path.write_bytes(f"not really a video {i}".encode() * 100)  # fails fast; we time its start
                settled = path.stat().st_mtime + args.settle
                db = root / ".facedrop" / "state.db"
                deadline = time.time() + args.settle + 30
                start = None
                while time.time() < deadline and start is None:
                    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
                        row = conn.execute("SELECT started_at FROM jobs WHERE input = ?",
                                           [str(path)]).fetchone()
                    start = row[0] if row and row[0] else None
                    time.sleep(0.05)
                if start is None:
                    print(f"{path.name}: job never started")
                    return 1
                latencies.append(start - settled)
                time.sleep(1.0)
            worst = max(latencies)
            print(f"settle -> start  {sum(latencies) / len(latencies):6.2f} s mean, {worst:.2f} s worst "
                  f"after a {args.settle:.0f} s settle time ({'met' if worst < 1 else 'MISSED'}: < 1 s)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
