"""Stop signals and the command convention (cli.run): SIGTERM unwinds a job through its finally blocks;
a signal the caller ignores stays ignored. A real server stopped this way: tests/test_faults.py."""

from __future__ import annotations

import signal
import subprocess
import sys

JOB = (
    "import argparse, asyncio, gc, signal, sys, time\n"
    "from resnet_serve import cli\n"
    "if 'nohup' in sys.argv:\n"
    "    signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "async def busy(end):\n"  # inside a task step, as a load generator's workers are while they encode
    "    while time.monotonic() < end:\n"
    "        sum(range(1000))\n"
    "        await asyncio.sleep(0)\n"
    "async def wait(seconds):\n"
    "    print('ready', flush=True)\n"
    "    end = time.monotonic() + seconds\n"
    "    await asyncio.gather(*(busy(end) for _ in range(4)))\n"
    "def job(args):\n"
    "    try:\n"
    "        if 'asyncio' in sys.argv:\n"
    "            asyncio.run(wait(float(sys.argv[1])))\n"
    "        else:\n"
    "            print('ready', flush=True)\n"
    "            time.sleep(float(sys.argv[1]))\n"
    "        return 0\n"
    "    finally:\n"
    "        gc.collect()\n"  # as a long clean-up would: the finished task is collected, and reported
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


def test_sigterm_during_an_event_loop_unwinds_without_asyncio_noise():
    """The load generators run in asyncio: the stop's SystemExit passes through a task, which asyncio then
    logged as 'Task exception was never retrieved' with a traceback, on every stopped tune or benchmark."""
    proc = start("60", "asyncio")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and out.strip() == "cleaned up"
    assert "SIGTERM received: stopping (cleaning up first)" in err
    assert "never retrieved" not in err and "Traceback" not in err, err
