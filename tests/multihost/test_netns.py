"""``remove_stale``: what a SIGKILLed run left (namespaces with processes inside, veth
pairs, a bridge, a work dir) is removed before the next run builds its own; a live
owner's names and names without the prefix are never touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multihost import netns
from tests.multihost.netns import PREFIX, WORK_DIR_PREFIX
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def root() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"multi-host tests skipped: {reason}")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _pids(name: str) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                          text=True).stdout.split()


@pytest.fixture
def made() -> Iterator[dict[str, list[str]]]:
    """What the test made; removed afterwards whatever the sweep did."""
    things: dict[str, list[str]] = {"netns": [], "link": [], "dir": []}
    yield things
    for link in things["link"]:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    for name in things["netns"]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for path in things["dir"]:
        shutil.rmtree(path, ignore_errors=True)


def test_a_dead_runs_leftovers_are_removed_and_nothing_else(
        root: None, made: dict[str, list[str]]) -> None:
    dead = _dead_pid()
    stale = f"{PREFIX}{dead}a"
    live = f"{PREFIX}1a"  # pid 1 always runs: another run still using its network
    foreign = f"tw{dead}a"  # a dead pid, as the old names had, but not our prefix
    with netns.sweep_lock():  # not swept half-built by the other xdist process
        for name in (stale, live, foreign):
            _ip("netns", "add", name)
            made["netns"].append(name)
        # a veth pair with one end inside the namespace, and a bridge, as Network makes
        for owner in (stale, live):
            made["link"].append(f"{owner}o")
            _ip("link", "add", f"{owner}o", "type", "veth", "peer", "name", f"{owner}i")
        _ip("link", "set", f"{stale}i", "netns", stale)
        made["link"].append(f"{PREFIX}{dead}br")
        _ip("link", "add", f"{PREFIX}{dead}br", "type", "bridge")
        work = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{dead}-"))
        made["dir"].append(str(work))
        (work / "pg").mkdir()
        # a process still running inside, like the killed run's Valkey
        inside = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "600"],
                                  start_new_session=True)
    try:
        # the process is in the namespace before the sweep looks
        wait_for(lambda: inside.poll() is not None or str(inside.pid) in _pids(stale),
                 timeout=10, what="sleep to run inside the namespace")
        assert inside.poll() is None

        removed = netns.remove_stale()

        # (the veth end is not always in the list: the pair may go with its namespace)
        assert {stale, f"{PREFIX}{dead}br", str(work)} <= set(removed)
        assert inside.wait(10) == -signal.SIGKILL
        names, links = set(netns.namespaces()), set(netns.links())
        assert stale not in names
        assert not {f"{stale}o", f"{PREFIX}{dead}br"} & links
        assert not work.exists()
        # a live owner's and a foreign name are left alone
        assert {live, foreign} <= names
        assert f"{live}o" in links
        assert not {live, foreign, f"{live}o"} & set(removed)

        # ``also`` (the fixture passes its own pid) removes that owner's names too
        assert set(netns.remove_stale(also=1)) >= {live, f"{live}o"}
        names = set(netns.namespaces())
        assert live not in names
        assert foreign in names
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(inside.pid, signal.SIGKILL)
        inside.wait(10)
