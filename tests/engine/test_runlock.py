"""engine.runlock: a run that loses the race for a folder names the holder, even when it reads the
lock file before the holder has written its record."""

import json
import threading
import time

import pytest
from filelock import FileLock

from botnet.engine.runlock import RunFolderBusy, RunFolderLock


def test_the_loser_waits_briefly_for_the_holders_record(tmp_path):
    lock = RunFolderLock(tmp_path / "run")
    (tmp_path / "run").mkdir()
    held = FileLock(str(lock.path), timeout=0)
    held.acquire()  # taken, but its record not written yet
    try:
        def record_later():
            time.sleep(0.3)
            lock.path.write_text(json.dumps({"pid": 4242, "host": "h", "started": "now"}) + "\n")

        writer = threading.Thread(target=record_later)
        writer.start()
        with pytest.raises(RunFolderBusy, match=r"in use by another run \(pid 4242 on host h since now\)"):
            lock.acquire()
        writer.join()
        lock.path.write_text("")  # a holder that never records itself is still refused, after the wait
        t0 = time.monotonic()
        with pytest.raises(RunFolderBusy, match="a process that has not yet recorded itself"):
            RunFolderLock(tmp_path / "run").acquire()
        assert time.monotonic() - t0 >= 2.5
    finally:
        held.release()
