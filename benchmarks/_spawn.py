"""A lean launcher: spawn a command, wait4 it, write its wall time and rusage as JSON.

    python -S benchmarks/_spawn.py OUT.json CMD [ARGS...]

Why not wait4 from the benchmark itself: Linux's ru_maxrss of a child is at least the RSS its
parent had when it forked (the pre-exec memory counts), so a benchmark holding 120 MB would
report 120 MB for a 60 MB child. This launcher is a bare interpreter (~10 MB), below the RSS of
anything it measures. The child inherits stdin, stdout, stderr and the environment.
"""

import json
import os
import sys
import time

out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, dict(os.environ))
with open(out + ".pid", "w") as f:
    f.write(str(pid))
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
code = os.waitstatus_to_exitcode(status)
with open(out, "w") as f:
    json.dump({"pid": pid, "rc": code, "wall_s": wall, "maxrss_kb": ru.ru_maxrss,
               "user_s": ru.ru_utime, "sys_s": ru.ru_stime}, f)
sys.exit(code if 0 <= code < 256 else 1)
