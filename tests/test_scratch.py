"""Work folders named after their process: a later one removes those whose process is gone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resnet_serve.scratch import remove_stale, scratch_dir


def test_folders_of_gone_processes_are_removed_and_live_ones_kept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # exited: its pid runs nothing now (unless reused, when the folder is kept)
    stale = tmp_path / f"work-{dead_pid}-abc"
    live = tmp_path / f"work-{os.getpid()}-def"
    other = tmp_path / "work-notapid-ghi"  # another naming: not ours to judge
    stale_file = tmp_path / f"work-{dead_pid}-file"  # only folders
    for folder in (stale, live, other):
        (folder / "inside").mkdir(parents=True)
    stale_file.write_text("x")
    if os.path.exists(f"/proc/{dead_pid}"):
        pytest.skip(f"pid {dead_pid} was taken again at once: nothing to tell (rare)")
    assert remove_stale("work-", tmp_path) == [stale]
    assert not stale.exists() and live.is_dir() and other.is_dir() and stale_file.is_file()


def test_a_scratch_folder_carries_this_process_id_and_goes_away_when_closed():
    with scratch_dir("resnet-serve-test-") as path:
        assert os.path.basename(path).startswith(f"resnet-serve-test-{os.getpid()}-")
        assert os.path.isdir(path)
    assert not os.path.exists(path)
