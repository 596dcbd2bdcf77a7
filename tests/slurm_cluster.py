"""A real one-node SLURM cluster on localhost for the tests (Debian's slurm-wlm and munge).

``start()`` writes ``/etc/slurm/slurm.conf`` (``srun`` inside a job reads that path, whatever
``SLURM_CONF`` the submitting shell had), starts ``munged``, ``slurmctld`` and ``slurmd`` with their
state, spool, log and pid files under a folder, and waits for the node to be idle; ``stop()``
stops the daemons by their pids and removes the config. The tests share one cluster per session
(``shared_cluster``: the pytest-xdist workers submit to the same node). It needs root and the
packages (``apt-get install slurm-wlm munge``); ``unavailable()`` says why it cannot run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by missingu's tests/slurm_cluster.py"
MUNGE_KEY = Path("/etc/munge/munge.key")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def unavailable() -> str | None:
    """Why a local cluster cannot be started here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root (to write /etc/slurm/slurm.conf and run slurmd)"
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"needs Debian's slurm-wlm and munge ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if CONF.exists() and MARK not in CONF.read_text():
        return f"{CONF} belongs to a real cluster; not overwriting it"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _config(root: Path, host: str, cpus: int, memory_mb: int) -> str:
    return "\n".join([
        MARK,
        "ClusterName=missingu-test",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmctldPort=16817",
        "SlurmdPort=16818",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "MinJobAge=600",
        "SchedulerType=sched/backfill",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _stop(pid_file: Path) -> None:
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def start(root: Path, memory_mb: int = 8000, timeout: float = 60.0) -> dict:
    """Start a one-node cluster (all CPUs of this machine, ``memory_mb`` of memory) with its state
    under ``root``; returns ``{"node", "cpus", "memory_mb", "root", "munge_pid"}`` for :func:`stop`."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"cannot start a local SLURM cluster: {reason}")
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    info = {"node": host, "cpus": cpus, "memory_mb": memory_mb, "root": str(root), "munge_pid": None}
    try:
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(_config(root, host, cpus, memory_mb))
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
            MUNGE_KEY.chmod(0o400)
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            munge_pid = root / "munged.pid"
            subprocess.run([_binary("munged"), "--force", f"--pid-file={munge_pid}"], check=True)
            info["munge_pid"] = str(munge_pid)
        subprocess.run([_binary("slurmctld")], check=True)
        subprocess.run([_binary("slurmd")], check=True)
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.strip()
            if state == "idle":
                return info
            time.sleep(1)
        raise RuntimeError(f"the local SLURM node did not become idle within {timeout} s (state {state!r}); "
                           f"see {root}/slurmctld.log and {root}/slurmd.log")
    except BaseException:
        stop(info)
        raise


def stop(info: dict) -> None:
    """Stop the daemons :func:`start` started, remove the config it wrote and its state folder."""
    root = Path(info["root"])
    _stop(root / "slurmd.pid")
    _stop(root / "slurmctld.pid")
    if info.get("munge_pid"):
        _stop(Path(info["munge_pid"]))
    if CONF.exists() and MARK in CONF.read_text():
        CONF.unlink()
    time.sleep(1)
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def local_cluster(memory_mb: int = 8000, timeout: float = 60.0) -> Iterator[dict]:
    """A cluster (:func:`start`) while the ``with`` block runs, stopped afterwards."""
    info = start(Path(tempfile.mkdtemp(prefix="missingu-slurm-")), memory_mb, timeout)
    try:
        yield info
    finally:
        stop(info)


def shared_cluster(folder: Path, memory_mb: int = 8000) -> dict:
    """One cluster for a whole test session, whichever pytest-xdist worker asks first: started
    under ``folder`` (a file lock makes the others wait, then read its ``cluster.json``), stopped by
    :func:`stop_shared` when the session ends."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "cluster.json"
    with open(folder / "cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            return json.loads(record.read_text())
        info = start(folder / "slurm", memory_mb)
        record.write_text(json.dumps(info))
        return info


def stop_shared(folder: Path) -> None:
    """Stop the session's cluster, if a worker started one under ``folder``."""
    record = folder / "cluster.json"
    if record.exists():
        stop(json.loads(record.read_text()))
        record.unlink()
