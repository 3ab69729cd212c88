"""One writer per output folder: an exclusive-create lock file beside it.

`flock`/`fcntl` locks are not honoured by every shared file system a cluster mounts (NFS without lockd,
Lustre with `noflock`), but an `O_CREAT | O_EXCL` create is atomic on all of them. So the lock is the file
`.<name>.lock` next to the folder, holding the host, pid and start time of its owner:
- a second writer finds it and either waits (`wait_s`) or stops with a message naming the owner;
- a lock whose owner is gone is stale and taken over: same host and the pid no longer runs, or another host
  and the file untouched for `stale_s` (the owner refreshes its mtime while it works, see `touch`).
Ingest, merge and each Slurm array part lock their own target; render can use the same class."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

DEFAULT_STALE_S = 6 * 3600.0


class LockBusy(RuntimeError):
    """Another live process writes the same folder."""


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (pid <= 0 names no single process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirLock:
    def __init__(self, target: str | Path, wait_s: float = 0.0, stale_s: float = DEFAULT_STALE_S):
        self.path = lock_path(target)
        self.target = Path(target)
        self.wait_s = wait_s
        self.stale_s = stale_s
        self.held = False
        self._last_touch = 0.0

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _stale(self) -> bool:
        owner = self._owner()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if owner is None:  # half-written by a creator that died at once, or garbage: old enough = stale
            return age > 60.0
        if owner.get("host") == socket.gethostname():
            return not pid_alive(int(owner.get("pid", -1)))
        return age > self.stale_s

    def acquire(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._stale():
                    # Take over by renaming the stale file away first: of two processes that both saw it
                    # stale, only one rename succeeds, so only one of them can go on to create the lock.
                    grave = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
                    try:
                        os.rename(self.path, grave)
                        os.unlink(grave)
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() >= deadline:
                    owner = self._owner() or {}
                    raise LockBusy(f"{self.target} is being written by another run (host {owner.get('host', '?')}, "
                                   f"pid {owner.get('pid', '?')}; lock {self.path}); wait for it to finish, or "
                                   f"remove the lock file if that run is gone") from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            self._last_touch = time.monotonic()
            return self

    def touch(self) -> None:
        """Refresh the lock's mtime (at most once a minute) so other hosts see the owner is alive."""
        if self.held and time.monotonic() - self._last_touch > 60.0:
            try:
                os.utime(self.path)
            except OSError:
                pass
            self._last_touch = time.monotonic()

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
