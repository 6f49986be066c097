"""The supervisor stops when asked, whatever it is doing, and its servers never outlive it, with small real
servers (Python's http.server answering the health path, and a sleeper) in place of tritonserver and gunicorn:

- a stop asked while the ready work (loading the demo models) still runs ends the run at once;
- a stop flag raised from a signal handler wakes a waiter in any thread;
- a supervisor SIGKILLed (the OOM killer, `kill -9`) takes its servers with it (scripts/die_with_parent.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil

from testkit.conditions import wait_for
from testkit.process_harness import free_port
from testkit.triton_harness import REPO

from .test_supervision_rules import supervisor

SCRIPTS = REPO / "scripts"
PROMPT_S = 15.0  # far beyond what a correct stop takes (POLL_S, then SIGTERM to servers that exit at once)


def health_server(root: Path) -> tuple[list[str], str]:
    """A command serving 200 on /v2/health/ready, and that URL."""
    (root / "v2" / "health").mkdir(parents=True)
    (root / "v2" / "health" / "ready").write_text("ok")
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    return command, f"http://127.0.0.1:{port}/v2/health/ready"


def test_a_stop_asked_while_the_ready_work_runs_is_not_held_by_it(tmp_path) -> None:
    command, health_url = health_server(tmp_path / "www")
    server = supervisor.Child("server", command, {}, tmp_path, health_url=health_url)
    sleeper = supervisor.Child("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, tmp_path)
    ready_work_started, never = threading.Event(), threading.Event()

    def on_ready() -> None:  # as loading the demo models can take minutes
        ready_work_started.set()
        never.wait(600)

    run = supervisor.Supervisor(
        server, sleeper, supervisor.SupervisionSettings(drain_s=1, triton_exit_s=5), tmp_path / "state.json", on_ready
    )
    run._shim_ready = lambda: True  # the sleeper has no health endpoint; the server's readiness is what counts
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(run.run()), daemon=True)
    thread.start()
    try:
        assert ready_work_started.wait(60), "the server never became ready"
        asked = time.monotonic()
        run.request_stop(signal.SIGTERM)
        thread.join(PROMPT_S)
        assert outcome == [0], "the stop waited for the ready work"
        assert time.monotonic() - asked < PROMPT_S
        assert not server.running() and not sleeper.running()
    finally:
        never.set()
        if thread.is_alive():
            run.stop()


def test_a_stop_flag_raised_by_a_signal_wakes_a_waiter_in_another_thread() -> None:
    flag = supervisor.StopFlag()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(flag.wait(60)))
    waiter.start()
    previous = signal.signal(signal.SIGUSR1, lambda number, _frame: flag.set(number))
    try:
        signal.raise_signal(signal.SIGUSR1)  # its handler runs in this (the main) thread
        waiter.join(PROMPT_S)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert woke == [True] and flag.signum == signal.SIGUSR1
    assert flag.wait(0) and flag.is_set()


SUPERVISED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from supervisor import Child, SupervisionSettings, Supervisor
    work = Path(sys.argv[2])
    server = Child("server", sys.argv[4:], {}, work, health_url=sys.argv[3])
    sleeper = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, work)
    raise SystemExit(Supervisor(server, sleeper, SupervisionSettings(), work / "state.json").run())
    """
)


def test_a_supervisor_killed_by_sigkill_takes_its_servers_with_it(tmp_path) -> None:
    command, health_url = health_server(tmp_path / "www")
    script = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED, str(SCRIPTS), str(tmp_path), health_url, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[psutil.Process] = []
    try:
        parent = psutil.Process(script.pid)

        def servers() -> list[psutil.Process]:
            return [p for p in parent.children() if "die_with_parent" not in " ".join(p.cmdline())]

        wait_for(lambda: len(servers()) == 2, 60, "both servers started")
        started += servers()
        script.kill()
        script.wait(10)
        wait_for(lambda: not [p for p in started if _alive(p)], PROMPT_S, "the servers ended with their supervisor")
    finally:
        if script.poll() is None:
            script.kill()
        for process in started:  # reparented once the supervisor died: only their objects still name them
            if _alive(process):
                process.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_die_with_parent_refuses_when_its_parent_is_already_gone() -> None:
    answer = subprocess.run([sys.executable, str(SCRIPTS / "die_with_parent.py"), "1", "true"], check=False)
    assert answer.returncode == 1  # its parent is this test, not PID 1: the supervisor it was meant for is gone
    usage = subprocess.run([sys.executable, str(SCRIPTS / "die_with_parent.py")], capture_output=True, check=False)
    assert usage.returncode == 2 and b"usage" in usage.stderr
