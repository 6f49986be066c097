"""`die_with_parent.py PARENT_PID COMMAND...`: run COMMAND so that it gets SIGTERM when its parent dies.

The supervisor starts each server in a session of its own (its process group is signalled as one), so nothing
else ends a server whose supervisor was SIGKILLed (the OOM killer, `kill -9`): it would go on serving with no one
to restart or stop it. PR_SET_PDEATHSIG survives the exec below. SIGTERM, not SIGKILL: each server then stops
as it does under `make serve`'s own stop (gunicorn drains, tritonserver unloads its model and its backend stubs,
which removes their shared memory), and their own children follow them (gunicorn's workers and the backend stubs
watch their parent). Standard library only; Linux (elsewhere COMMAND just runs).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: die_with_parent.py PARENT_PID COMMAND...", file=sys.stderr)
        return 2
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: no parent-death signal
    if os.getppid() != int(argv[0]):
        return 1  # the parent died before the signal was asked for: nothing would stop this server
    os.execvp(argv[1], argv[1:])
    return 127  # not reached: execvp raises when it fails


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
