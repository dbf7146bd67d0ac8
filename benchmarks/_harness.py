"""Shared plumbing for the benchmark scripts: the fake API in its own process, measured
subprocesses (wall time, peak RSS and CPU via wait4), and small formatting helpers.

Nothing here is imported by the tool; it only runs the tool as a user would.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable
_TICK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(REPO))  # the tool's package, for FAKE_API_KEY / DEFAULT_WORKERS only

from klaviyo_sync.fake import FAKE_API_KEY  # noqa: E402


def emit_result(result: dict, json_out: str | None) -> None:
    """Print the benchmark's JSON line, and append it to ``json_out`` when given."""
    line = json.dumps(result, separators=(",", ":"))
    print(line)
    if json_out:
        with open(json_out, "a") as f:
            f.write(line + "\n")


def system_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot, from /proc/stat.

    Measured before and after a run, minus the CPU of the measured process and of the fake, it
    shows how much OTHER work ran meanwhile (this machine has 2 cores; other load skews results).
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def code_version() -> dict:
    """The commit measured, and whether klaviyo_sync/ had uncommitted changes (read-only git)."""
    import subprocess as sp

    def git(*a):
        try:
            return sp.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, sp.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--", "klaviyo_sync", "pyproject.toml"))}


def tool_exe() -> str:
    """The ``klaviyo-sync`` console script of this interpreter's environment."""
    here = Path(PYTHON).parent / "klaviyo-sync"
    if here.exists():
        return str(here)
    found = shutil.which("klaviyo-sync")
    if not found:
        sys.exit("klaviyo-sync is not installed in this environment: run with /work/main/.venv/bin/python "
                 "(or `pip install -e .` first)")
    return found


def default_workers() -> int:
    from klaviyo_sync.cli import DEFAULT_WORKERS

    return DEFAULT_WORKERS


# -- the fake API, in its own process (it must not share the GIL with what is measured) ---------
class Fake:
    def __init__(self, *, events: int, span_hours: float, latency: float = 0.0,
                 enforce_limits: bool = False, seed: int = 1, profiles: int | None = None,
                 extra: list[str] | None = None, wrapper: list[str] | None = None):
        cmd = ["-m", "klaviyo_sync.fake", "--port", "0", "--events", str(events),
               "--span-hours", repr(span_hours), "--seed", str(seed)]
        if latency:
            cmd += ["--latency", repr(latency)]
        if enforce_limits:
            cmd += ["--enforce-limits"]
        if profiles is not None:
            cmd += ["--profiles", str(profiles)]
        self.cmd = [PYTHON, *(wrapper or []), *cmd, *(extra or [])]
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.started_at: float | None = None  # epoch seconds just before the process started
        self.ready_at: float | None = None    # epoch seconds once it printed its URL

    def start(self, timeout: float = 300.0) -> "Fake":
        self.started_at = time.time()
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.stop()
                raise RuntimeError(f"the fake API did not start within {timeout:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"the fake API exited before printing its URL:\n{err}")
            line += chunk
        sel.close()
        self.url = line.decode().strip().splitlines()[0]
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"unexpected first line from the fake: {self.url!r}")
        self.ready_at = time.time()
        return self

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_fake/stats", timeout=30) as resp:
            return json.loads(resp.read())

    def cpu_seconds(self) -> float:
        """user + system CPU the fake process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


# -- one measured subprocess ----------------------------------------------------------------------
@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall_s: float
    maxrss_kb: int
    user_s: float
    sys_s: float
    stdout: str
    stderr: str
    rss_samples: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def rss_timeline_mb(self, points: int = 12) -> list[list[float]]:
        """A few (seconds, MB) points of the RSS over the run, to see whether it grows with N."""
        s = self.rss_samples
        if not s:
            return []
        step = max(1, len(s) // points)
        picked = s[::step] + ([s[-1]] if (len(s) - 1) % step else [])
        return [[t, round(kb / 1024, 1)] for t, kb in picked]

    @property
    def maxrss_mb(self) -> float:
        return self.maxrss_kb / 1024


def _proc_status_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def _child_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


def run_measured(cmd: list[str], *, env: dict | None = None, cwd: Path | str | None = None,
                 timeout: float | None = None, sample_every: float = 0.25) -> Measured:
    """Run ``cmd`` and measure it from spawn to exit.

    The command is started by benchmarks/_spawn.py (a bare interpreter), which times it and
    takes its rusage from wait4: peak RSS (ru_maxrss), user and system CPU are that one
    process's own (plus any children it waited for), never the benchmark's. Meanwhile VmRSS is
    sampled every ``sample_every`` seconds for a timeline, and the last VmHWM read is kept as a
    cross-check of the peak.
    """
    with tempfile.TemporaryDirectory(prefix="measure_") as tmp:
        result_file = os.path.join(tmp, "rusage.json")
        out = open(os.path.join(tmp, "stdout"), "w+b")
        err = open(os.path.join(tmp, "stderr"), "w+b")
        launcher = [PYTHON, "-S", str(BENCH_DIR / "_spawn.py"), result_file, *cmd]
        t0 = time.perf_counter()
        proc = subprocess.Popen(launcher, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        samples: list[tuple[float, int]] = []  # (seconds since start, VmRSS kB), for the RSS timeline
        hwm = None
        child = None
        next_sample = 0.0
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if now >= next_sample:
                child = child or _child_of(proc.pid)
                if child:
                    st = _proc_status_kb(child)
                    if "VmRSS" in st:
                        samples.append((round(now, 2), st["VmRSS"]))
                        hwm = st.get("VmHWM", hwm)
                next_sample = now + sample_every
            if deadline is not None and time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        out.close()
        err.close()
        try:
            with open(result_file) as f:
                r = json.load(f)
        except (OSError, ValueError):
            r = {"rc": proc.returncode if proc.returncode is not None else -9, "wall_s": time.perf_counter() - t0,
                 "maxrss_kb": 0, "user_s": 0.0, "sys_s": 0.0}
        m = Measured(cmd=cmd, rc=r["rc"], wall_s=r["wall_s"], maxrss_kb=r["maxrss_kb"], user_s=r["user_s"],
                     sys_s=r["sys_s"], stdout=stdout, stderr=stderr, rss_samples=samples)
        m.extra["last_vmhwm_kb"] = hwm
        return m


def tool_env(base_url: str, db: Path | str, **more: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update({"KLAVIYO_API_KEY": FAKE_API_KEY, "KLAVIYO_BASE_URL": base_url, "KLAVIYO_SYNC_DB": str(db)})
    env.update(more)
    return env


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def iso_z(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """A plain text table: cols are (key, header, format spec)."""
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        line = []
        for key, _, spec in cols:
            v = r.get(key)
            line.append("-" if v is None else (format(v, spec) if spec else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    out = []
    for n, line in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n and cols[i][2] else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
