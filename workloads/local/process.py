"""Process groups by PID: start detached, identify without PID-reuse mistakes, stop fully.

A service runs as the leader of its own session/process group (``start_new_session``),
so the group id equals the leader's PID and every child it forks (MLflow's workers, a
JVM's helpers) is in the same group. We record the leader's PID, its group id, its
start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) and the boot id. A
recorded process "is ours" only if all of these still match; processes are never found
or signalled by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, pgrp, session, starttime) of a PID, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # comm may contain spaces/parens: the fields after the last ')' are fixed.
    rest = raw[raw.rfind(")") + 2 :].split()
    # rest[0] = state (field 3), rest[2] = pgrp (5), rest[3] = session (6), rest[19] = starttime (22)
    try:
        return rest[0], int(rest[2]), int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is ``pgid`` (scans /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = proc_stat(int(entry.name))
        if st and st[1] == pgid and st[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@dataclass
class ProcessRecord:
    """What the PID file of a service holds (JSON)."""

    service: str
    pid: int
    pgid: int
    start_ticks: int
    boot_id: str
    command: list[str]
    ports: dict[str, int]
    log: str
    started_at: float
    extra: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ProcessRecord | None":
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    # -- identity -------------------------------------------------------------------------
    def leader_alive(self) -> bool:
        """The recorded leader is running and is the very process we started."""
        if self.boot_id and self.boot_id != _boot_id():
            return False
        st = proc_stat(self.pid)
        return bool(st) and st[0] not in ("Z", "X") and st[3] == self.start_ticks

    def pid_reused(self) -> bool:
        """The PID exists but belongs to a different process than the one we started."""
        st = proc_stat(self.pid)
        return bool(st) and (st[3] != self.start_ticks or (self.boot_id and self.boot_id != _boot_id()))

    def live_members(self) -> list[int]:
        """Processes of our group still running (none if the group id was reused)."""
        if self.boot_id and self.boot_id != _boot_id():
            return []
        if self.pid_reused():
            # A PID is only handed out again once no group uses it as its id, so if the
            # leader's PID now names another process, our group is gone.
            return []
        return group_members(self.pgid)


def start_detached(
    command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path
) -> subprocess.Popen:
    """Start ``command`` as the leader of a new session, stdout+stderr appended to the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        return subprocess.Popen(
            command,
            env=env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def stop_group(record: ProcessRecord, timeout_s: float, reap=None) -> bool:
    """SIGTERM the group, wait up to ``timeout_s``, then SIGKILL what is left.

    Returns True if nothing of the group is left. ``reap`` (optional) is called while
    waiting so a parent can collect its zombie children.
    """

    def left() -> list[int]:
        if reap:
            reap()
        return record.live_members()

    if not left():
        return True
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not left():
                return True
            time.sleep(0.1)
    return not left()


def new_record(
    service: str, proc: subprocess.Popen, command: list[str], ports: dict[str, int], log: Path, extra=None
) -> ProcessRecord:
    st = proc_stat(proc.pid)
    return ProcessRecord(
        service=service,
        pid=proc.pid,
        pgid=os.getpgid(proc.pid) if st else proc.pid,
        start_ticks=st[3] if st else -1,
        boot_id=_boot_id(),
        command=command,
        ports=dict(ports),
        log=str(log),
        started_at=time.time(),
        extra=dict(extra or {}),
    )
