"""Stop signals and the command convention (cli.run): SIGTERM unwinds a job through its finally blocks;
a signal the caller ignores stays ignored. A real server stopped this way: tests/test_faults.py."""

from __future__ import annotations

import signal
import subprocess
import sys

JOB = (
    "import argparse, signal, sys, time\n"
    "from resnet_serve import cli\n"
    "if 'nohup' in sys.argv:\n"
    "    signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "def job(args):\n"
    "    try:\n"
    "        print('ready', flush=True)\n"
    "        time.sleep(float(sys.argv[1]))\n"
    "        return 0\n"
    "    finally:\n"
    "        print('cleaned up', flush=True)\n"
    "sys.exit(cli.run(argparse.ArgumentParser(), job, []))\n"
)


def start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_sigterm_runs_the_jobs_clean_up_and_exits_143():
    proc = start("60")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and out.strip() == "cleaned up"
    assert "SIGTERM received: stopping (cleaning up first)" in err


def test_a_sighup_the_caller_ignores_stays_ignored():
    proc = start("2", "nohup")
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "cleaned up", err
