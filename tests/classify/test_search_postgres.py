"""Distributed search on a real PostgreSQL server: two `cifarlab classify search` processes (two
machines, as far as the study can tell) share one study; one is killed with SIGKILL in the middle
of a trial. The other must finish the study, the killed trial must come back through the
heartbeat (stale -> FAIL -> queued again), and every grid point must be COMPLETE exactly once.

Needs `initdb`/`pg_ctl` on the PATH and psycopg2 (`pip install -e ".[postgres]"`); skips without
them. The server runs from a temporary folder on a unix socket (no port to collide on), as the
`postgres` user when the tests run as root (PostgreSQL refuses root).
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

psycopg2 = pytest.importorskip("psycopg2")
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from cifarlab.classify.search import HEARTBEAT_ENV, SearchSpec, grid_points, with_installed_driver  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("initdb") is None or shutil.which("pg_ctl") is None,
                                reason="PostgreSQL (initdb, pg_ctl) is not installed")
DEADLINE = 120.0   # seconds any one wait may take before the test fails (normally a few seconds)


def _server_user() -> dict:
    """Popen arguments that run the server as a non-root user (nothing to change when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a 'postgres' user to run the server as (useradd postgres)")
    return dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])


@pytest.fixture
def postgres_url():
    """A throw-away cluster; stopped and deleted afterwards, also when the test fails."""
    as_user = _server_user()
    root = tempfile.mkdtemp(prefix="cifarlab-pg-")  # short: a unix socket path has a length limit
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data = os.path.join(root, "data")

    def pg(*args):
        done = subprocess.run(args, cwd=root, capture_output=True, text=True, **as_user)
        if done.returncode:
            log_file = os.path.join(root, "server.log")
            log = open(log_file).read() if os.path.exists(log_file) else ""
            pytest.fail(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    try:
        pg("initdb", "--no-sync", "-D", data, "-U", "cifarlab", "--auth=trust", "-E", "UTF8")
        pg("pg_ctl", "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-t", "60", "start",
           "-o", f"-k {root} -c listen_addresses='' -c max_connections=50 -c fsync=off")
        yield f"postgresql://cifarlab@/postgres?host={root}"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(["pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], cwd=root, capture_output=True,
                           **as_user)
        shutil.rmtree(root, ignore_errors=True)


def wait_for(what: str, check, children):
    """Poll `check` until it returns something truthy; fail (with the children's output) after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if any(child.poll() not in (None, 0) for child in children):
            break
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def trials_of(storage, name):
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def test_a_worker_killed_mid_trial_is_retried_by_heartbeat_and_the_other_finishes(postgres_url, make_folder,
                                                                                tmp_path):
    data = make_folder(tmp_path / "data", per_class=6)
    name = "pg-kill"
    args = ["--recipe", "baseline", "--data", str(data), "--grid", "lr-wd-full", "--folds", "2", "--epochs", "100000",
            "--time-budget", "0.2", "--storage", postgres_url, "--study-name", name, "--workers", "1"]
    points = grid_points(SearchSpec(recipe="baseline", grid="lr-wd-full").space())
    env = {**os.environ, HEARTBEAT_ENV: "1,3", "OMP_NUM_THREADS": "1"}
    logs, children = {}, []
    storage = optuna.storages.RDBStorage(with_installed_driver(postgres_url))  # one connection pool for all looks

    def start(label):
        logs[label] = open(tmp_path / f"{label}.log", "w+")
        child = subprocess.Popen([sys.executable, "-m", "cifarlab", "classify", "search", *args,
                                  "--out", str(tmp_path / label)], env=env, stdout=logs[label],
                                 stderr=subprocess.STDOUT)
        children.append(child)
        return child

    def at_first_fold(child):
        for t in trials_of(storage, name):
            if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == child.pid and not t.intermediate_values:
                return t
        return None

    try:
        victim = start("victim")
        wait_for("the first worker's first trial", lambda: at_first_fold(victim), children)
        survivor = start("survivor")
        # kill inside a trial that has a whole fold still to train, so it cannot finish meanwhile (the
        # survivor may or may not have started trials of its own by then: it must not matter)
        killed = wait_for("a trial of the first worker at its first fold", lambda: at_first_fold(victim), children)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert survivor.wait(timeout=DEADLINE) == 0

        trials = trials_of(storage, name)
        by_number = {t.number: t for t in trials}
        assert by_number[killed.number].state == TrialState.FAIL          # the heartbeat stopped: failed ...
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
        assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE  # ... and run again
        assert retried[0].params == killed.params and retried[0].user_attrs["pid"] == survivor.pid
        complete = [t.params for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(map(str, complete)) == sorted(map(str, points))      # every point once, none twice
        others = [t for t in trials if t.state != TrialState.COMPLETE and t.number != killed.number]
        assert all(t.state == TrialState.PRUNED and "duplicate_of" in t.user_attrs for t in others), others
        assert (tmp_path / "survivor" / "report.md").is_file()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for label, log in logs.items():  # pytest shows this only when the test fails
            log.seek(0)
            print(f"----- {label} worker output -----\n{log.read()}")
            log.close()
