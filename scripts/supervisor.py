"""Supervision for `make serve`: tritonserver and the gunicorn master are restarted when they die or hang.

- A child that exits for any reason (signal, exit code) is cleaned up (its whole process group: backend
  stubs and their watchers included) and started again after a backoff: 1 s, doubling to 30 s, back to 1 s
  once it has been healthy for a minute. Each restart is logged with its cause.
- tritonserver is hung when its health endpoint has not answered for `hang_timeout_s`: it is killed and
  restarted like a dead one. One that never becomes ready within `start_timeout_s` failed to start.
- A child that fails 5 times in a row, each time within a minute of its start, cannot start at all: the
  supervisor stops everything and exits non-zero, naming the cause.
- stop() ends the shim first (gunicorn stops taking requests and lets in-flight ones finish within
  `drain_s`), then Triton, and leaves no process behind.

The supervisor writes what it knows of Triton to `state_file` (JSON), which the shim's status reads to say
`starting` rather than `error` while Triton comes back. Standard library only.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lora_core, beside scripts/ here and in the image
from lora_core.settings import read  # standard library only, like this module

DIE_WITH_PARENT = Path(__file__).with_name("die_with_parent.py")
HEALTHY_AFTER_S = 60.0  # a child healthy this long resets the backoff; one that dies sooner counts as a failed start
GIVE_UP_AFTER: int = read("TRITON_GIVE_UP_AFTER", {})  # failed starts in a row, by default
POLL_S = 0.5


def log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


class StopFlag:
    """A stop request that a signal handler raises, and that waiters in any thread see at once.

    The handler only sets a field and writes one byte: no output (a print that blocks on a stalled stderr, or
    interrupts another print, would stop the loop that must do the stopping) and no lock. A pipe, written once
    and never read, stays readable, so every wait returns."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self.signum: int | None = None  # the signal that asked for the stop, if one did
        self._set = False

    def __del__(self) -> None:
        os.close(self._read)
        os.close(self._write)

    def set(self, signum: int | None = None) -> None:
        if not self._set:
            self.signum, self._set = signum, True
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False after `timeout` seconds otherwise."""
        if not self._set:
            poller = select.poll()  # not select.select: descriptors may pass 1024
            poller.register(self._read, select.POLLIN)
            poller.poll(None if timeout is None else timeout * 1000)
        return self._set


class RestartPolicy:
    """When to restart a child that exited, and when to give up on it."""

    def __init__(
        self,
        initial_s: float = 1.0,
        maximum_s: float = 30.0,
        healthy_after_s: float = HEALTHY_AFTER_S,
        give_up_after: int = GIVE_UP_AFTER,
    ) -> None:
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self.healthy_after_s, self.give_up_after = healthy_after_s, give_up_after
        self.next_delay_s = initial_s
        self.failed_starts = 0  # in a row

    def after_exit(self, ran_for_s: float, healthy_for_s: float) -> float | None:
        """The delay before the next start, or None when the child cannot start at all."""
        if healthy_for_s >= self.healthy_after_s:
            self.next_delay_s = self.initial_s
        self.failed_starts = self.failed_starts + 1 if ran_for_s < self.healthy_after_s else 0
        if self.failed_starts >= self.give_up_after:
            return None
        delay, self.next_delay_s = self.next_delay_s, min(self.next_delay_s * 2, self.maximum_s)
        return delay


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Child:
    """One server process in its own process group; its output is forwarded and the last lines kept."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        health_url: str | None = None,
        output: TextIO = sys.stdout,
    ) -> None:
        self.name, self.command, self.env, self.cwd = name, command, env, cwd
        self.health_url = health_url
        self.output = output
        self.process: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.last_answer_at = 0.0
        self.restart_at: float | None = None  # set while it waits out a backoff
        self.shared_memory: set[Path] = set()  # /dev/shm files of the group, removed once it is gone
        self.policy = RestartPolicy()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        # In a session of its own (its group is signalled as one), and ended with us if we die (die_with_parent.py).
        self.process = subprocess.Popen(
            [sys.executable, str(DIE_WITH_PARENT), str(os.getpid()), *self.command],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = self.last_answer_at = time.monotonic()
        self.ready_at = self.restart_at = None
        threading.Thread(target=self._forward, args=(self.process.stdout,), daemon=True).start()

    def _forward(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.lines.append(line.rstrip("\n"))
            try:
                self.output.write(line)
                self.output.flush()
            except (OSError, ValueError):  # our own output is gone; keep draining the pipe
                pass

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool | None:
        """True when the health endpoint answers 200, False when it answers otherwise or refuses the
        connection before the first ready (the server is still starting), None when it is silent: it
        accepts connections and never answers (hung), or refuses them after having been ready."""
        if self.health_url is None:
            return True
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError:
            return False
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            return False if refused and self.ready_at is None else None
        except OSError:
            return None

    def check_health(self, now: float) -> bool:
        """Probe the health endpoint once; True when this made the child ready."""
        answer = self.answers()
        if answer is not None:
            self.last_answer_at = now
        if answer and self.ready_at is None:
            self.ready_at = now
            self.note_shared_memory()
            return True
        return False

    def health_problem(self, now: float, settings: SupervisionSettings) -> str | None:
        """Why the child must be treated as dead although it runs (never ready, or hung), or None."""
        if self.ready_at is None and now - self.started_at > settings.start_timeout_s:
            return f"{self.name} was not ready {settings.start_timeout_s:.0f} s after its start"
        if now - self.last_answer_at > settings.hang_timeout_s:
            return f"{self.name} stopped answering its health endpoint for {now - self.last_answer_at:.0f} s (hung)"
        return None

    def end(self, grace_s: float) -> None:
        """SIGTERM to the group, SIGKILL after `grace_s`; returns once nothing of the group is left."""
        if self.process is None:
            return
        if self.running():
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {grace_s:.0f} s; killing it")
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group (the server, its backend stubs and their watchers), reap the server, and
        remove the shared-memory files the group had mapped: a killed backend stub never unlinks its own."""
        if self.process is None:
            return
        self.shared_memory |= _shared_memory_of_group(self.process.pid)
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 5
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            _signal_group(self.process.pid, signal.SIGKILL)
            time.sleep(0.05)
        for path in self.shared_memory:
            path.unlink(missing_ok=True)
        self.shared_memory = set()

    def note_shared_memory(self) -> None:
        """Remember the shared-memory files the group maps now (while its stubs are surely alive)."""
        if self.running():
            self.shared_memory |= _shared_memory_of_group(self.process.pid)

    def cause(self, summary: str) -> str:
        """`summary`, with the last error lines of the child's output."""
        errors = [line for line in self.lines if _looks_like_error(line)][-3:]
        return summary + ("; last errors:\n  " + "\n  ".join(errors) if errors else "")


def _looks_like_error(line: str) -> bool:
    # Triton's error lines start with E<month><day>; Python's with Traceback / *Error:
    return (len(line) > 5 and line[0] == "E" and line[1:5].isdigit()) or "Error" in line or "error:" in line


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[Path]:
    """/proc entries of the group's processes, zombies left out."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(entry)
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _shared_memory_of_group(pgid: int) -> set[Path]:
    """The /dev/shm files mapped by the group's processes (Triton's Python backend regions among them)."""
    found: set[Path] = set()
    for entry in _group_members(pgid):
        try:
            maps = (entry / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                found.add(Path(fields[5].removesuffix(" (deleted)")))
    return found


@dataclass(frozen=True)
class SupervisionSettings:
    # Defaults: the settings' own (lora_core/settings_registry.py); from_environment reads them as set.
    hang_timeout_s: float = read("TRITON_HANG_TIMEOUT_S", {})
    start_timeout_s: float = read("TRITON_START_TIMEOUT_S", {})
    drain_s: float = read("DRAIN_TIMEOUT_S", {})
    triton_exit_s: float = 15.0  # tritonserver's --exit-timeout-secs plus a margin
    give_up_after: int = GIVE_UP_AFTER

    def __post_init__(self) -> None:
        for name, value in (
            ("TRITON_HANG_TIMEOUT_S", self.hang_timeout_s),
            ("TRITON_START_TIMEOUT_S", self.start_timeout_s),
            ("DRAIN_TIMEOUT_S", self.drain_s),
            ("TRITON_GIVE_UP_AFTER", self.give_up_after),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be above 0, got {value}")

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> SupervisionSettings:
        """The supervision settings as `environ` sets them (ValueError names one that is wrong)."""
        return cls(
            hang_timeout_s=read("TRITON_HANG_TIMEOUT_S", environ),
            start_timeout_s=read("TRITON_START_TIMEOUT_S", environ),
            drain_s=read("DRAIN_TIMEOUT_S", environ),
            give_up_after=read("TRITON_GIVE_UP_AFTER", environ),
        )


class Supervisor:
    def __init__(
        self,
        triton: Child,
        shim: Child | None,
        settings: SupervisionSettings,
        state_file: Path,
        on_ready: Callable[[], None] = lambda: None,
        shim_ready_url: str | None = None,
    ) -> None:
        self.triton, self.shim = triton, shim
        self.settings = settings
        self.state_file = state_file
        self.on_ready = on_ready
        self.shim_ready_url = shim_ready_url
        self.restarts = 0
        for child in self._children():
            child.policy = RestartPolicy(give_up_after=settings.give_up_after)
        self._announced = False
        self._stop = StopFlag()

    def request_stop(self, signum: int, _frame=None) -> None:
        """A signal handler: it only raises the flag, which the loop in run() sees within POLL_S."""
        self._stop.set(signum)

    def run(self) -> int:
        """Supervise until stopped (0) or until a child cannot start at all (1)."""
        self._write_state("starting", "first start")
        for child in self._children():
            child.start()
        try:
            while not self._stop.wait(POLL_S):
                for child in self._children():
                    if not self._supervise(child):
                        return 1
                if not self._announced and self.triton.ready_at is not None and self._shim_ready():
                    self._announced = True
                    # Apart from this loop: it loads the demo models (minutes at worst), and a stop asked for
                    # meanwhile must not wait for them.
                    threading.Thread(target=self.on_ready, name="on-ready", daemon=True).start()
            if self._stop.signum is not None:
                log(f"stopping (signal {self._stop.signum})")
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        """The shim first (it stops taking requests and drains), then Triton; nothing is left behind."""
        if self.shim is not None:
            self.shim.end(self.settings.drain_s + 5)
        self.triton.end(self.settings.triton_exit_s)

    def _children(self) -> list[Child]:
        """The health-checked child (Triton, or another server with a health endpoint) and its companion."""
        return [self.triton] + ([self.shim] if self.shim is not None else [])

    # ------------------------------------------------------------------------------------------

    def _supervise(self, child: Child) -> bool:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.start()
                if child is self.triton:
                    self._write_state("starting", f"restart {self.restarts}")
            return True
        if not child.running():
            return self._restart(child, child.cause(f"{child.name} exited ({describe_exit(child.process.returncode)})"))
        if child is not self.triton:
            return True
        became_ready = child.check_health(now)
        if became_ready:
            self._write_state("running", "ready")
            if self.restarts:
                log(f"tritonserver is ready again after {now - child.started_at:.1f} s")
        problem = child.health_problem(now, self.settings)
        return True if problem is None else self._restart(child, problem)

    def _restart(self, child: Child, cause: str) -> bool:
        """Clean up after `child` and schedule its restart; False when it cannot start at all."""
        child.kill()
        now = time.monotonic()
        healthy_for = (
            now - child.ready_at
            if child.ready_at is not None
            else (now - child.started_at if child is not self.triton else 0.0)
        )
        delay = child.policy.after_exit(now - child.started_at, healthy_for)
        if delay is None:
            log(
                f"{cause}\nserve: {child.name} failed {child.policy.give_up_after} times in a row, each within "
                f"{HEALTHY_AFTER_S:.0f} s of its start: it cannot start; stopping"
            )
            self._write_state("error", cause)
            return False
        self.restarts += 1
        log(f"{cause}\nserve: restarting {child.name} in {delay:.0f} s (restart {self.restarts})")
        if child is self.triton:
            self._write_state("starting", cause)
        child.restart_at = now + delay
        return True

    def _shim_ready(self) -> bool:
        if self.shim_ready_url is None or self.shim is None or not self.shim.running():
            return False
        try:
            with urllib.request.urlopen(self.shim_ready_url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _write_state(self, state: str, detail: str) -> None:
        """Atomically, for the shim's status endpoint."""
        document = {"state": state, "detail": detail.splitlines()[0], "restarts": self.restarts, "at": time.time()}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(document))
        temporary.replace(self.state_file)
