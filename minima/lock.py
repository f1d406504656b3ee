"""The lock of a run folder: one executing process holds it; a second launch is refused, naming the holder.

Torch-free and free of the rest of the package but for ``minima.errors``, so
``minima.runs`` (which owns the folder) re-exports it.
"""

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from minima.errors import StudyError

LOCK = "lock"        # the file's name in the run folder
ALIVE_S = 120        # a lock (or any run file) touched this recently means its run is alive
HEARTBEAT_S = 30     # the holder touches its lock this often (and a sweep job its job.log)


def file_mode() -> int:
    """What a plain ``open()`` would give: 0666 less the umask (``mkstemp`` alone gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid) -> bool:
    """Whether ``pid`` runs on this host; a killed process not yet reaped (a zombie) does not."""
    try:
        import psutil
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends: it is gone
        return False


def _refuse(message):
    raise StudyError(message)


class RunLock:
    """Who is executing a run: ``lock`` in the run folder, created exclusively, touched every HEARTBEAT_S.

    ``O_CREAT | O_EXCL`` is atomic on local filesystems and on NFS v3 and later,
    so two launches on two nodes cannot both create it. A lock whose file has
    not been touched for ALIVE_S (its holder was killed, or its node died), or
    whose holder on this host is no longer a process, is stale: the next
    launch renames it away (only one rename of a file can succeed) and takes
    over. The holder's token travels to the notebook kernel it starts through
    ``MINIMA_RUN_LOCK``, so the kernel knows the lock is its own.
    """

    ENV = "MINIMA_RUN_LOCK"

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK
        self.token = None
        self.owned = False   # True when this object created the lock file (a parent's lock is not ours to remove)
        self._stop = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None if not self.path.exists() else {}

    def is_stale(self, info=None) -> bool:
        info = self.holder() if info is None else info
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return True
        if age > ALIVE_S:
            return True
        if info and info.get("host") == socket.gethostname() and info.get("pid"):
            return not _alive(int(info["pid"]))
        return False

    def describe(self, info) -> str:
        if not info:
            return "an unknown process (unreadable lock file)"
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    def acquire(self, heartbeat=True) -> "RunLock":
        """Take the lock, or raise StudyError naming its holder. Already ours (same token): a no-op."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        inherited = os.environ.get(self.ENV)
        info = self.holder()
        if info is not None and inherited and info.get("token") == inherited:
            self.token = inherited   # our parent (the runner or a sweep job) holds it for us
            return self
        token = uuid.uuid4().hex
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "token": token}
        for _attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, file_mode())
            except FileExistsError:
                info = self.holder()
                if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                    self.token = info.get("token")   # this very process took it earlier (a re-run notebook cell)
                    self._start_heartbeat(heartbeat)
                    return self
                if info is not None and not self.is_stale(info):
                    _refuse(f"{self.path.parent} is being run by {self.describe(info)}; "
                            f"wait for it, or stop that process first")
                with contextlib.suppress(FileNotFoundError):   # stale: move it aside; one rename wins
                    os.rename(self.path, self.path.with_name(f".{LOCK}.stale.{token}"))
                    self.path.with_name(f".{LOCK}.stale.{token}").unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            self.token, self.owned = token, True
            self._start_heartbeat(heartbeat)
            return self
        _refuse(f"could not take the lock {self.path}: another launch took it at the same moment")

    def _start_heartbeat(self, heartbeat):
        if not heartbeat or self._stop is not None:
            return
        self._stop = threading.Event()

        def beat(stop=self._stop, path=self.path):
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    os.utime(path)

        threading.Thread(target=beat, daemon=True, name="run-lock-heartbeat").start()

    def release(self) -> None:
        """Give the lock up if this object took it, or this process holds it; a parent's lock is left alone."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        info = self.holder()
        mine = info and ((self.owned and info.get("token") == self.token)
                         or (info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()))
        if mine:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
