"""Where the steps of `transform apply` run: one interface, one small adapter per way.

The job (`cifarlab.transform.apply`) decides what is read, skipped and written, and cuts the
work into tasks (a list of inputs and where their outputs go). An engine runs each task's
three steps, `read_task` -> `run_model` -> `write_task`, and yields (task, written,
unreadable) as tasks finish:

- `LocalEngine(workers)`: reading and writing in `workers` forked processes, the model in
  this process (0 workers: everything in this process);
- `RayEngine(address, num_cpus, actors)`: a Ray Data pipeline. On CPUs, `map_batches` runs
  whole tasks (read, model, write) as Ray tasks, one a CPU at a time, in Ray worker processes
  warmed at start-up (torch imported, the model built); when the cluster has GPUs, one GPU
  actor each runs the model, with Ray tasks reading and writing on the CPUs. No address (and
  no RAY_ADDRESS): a local Ray instance is started with `num_cpus`; otherwise the cluster at
  the address is joined (its workers need cifarlab installed). The seconds spent starting or
  joining Ray and warming its workers are reported apart from the job's.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import time
from collections import deque
from contextlib import contextmanager

import torch

from ..errors import CifarlabError
from ..imagefiles import init_worker
from .apply import read_task, run_model, write_task

PENDING_PER_WORKER = 2   # tasks in flight per worker process, reading or writing: bounds memory
RAY_INSTALL = 'the Ray engine needs Ray: pip install "cifarlab[ray]"'
CONNECT_TIMEOUT_S = 10
TASKS_PER_RAY_TASK = 4   # the job's tasks run by one Ray task on CPUs (see _RayRun)


# ---- local: a forked process pool

class LocalEngine:
    name = "local"

    def __init__(self, workers: int):
        if workers < 0:
            raise CifarlabError(f"--workers must be 0 (decode in this process) or more, got {workers}")
        self.workers = workers

    @contextmanager
    def session(self, ckpt, device, size):
        run = _LocalRun(self.workers, device, size)
        threads = torch.get_num_threads()
        if self.workers and device.type == "cpu":
            # The workers need the cores: torch's threads in this process spin between the small
            # model calls and took them (workers 2 on 2 cores: ~4,000 -> ~5,600 images/s, tmpfs).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - self.workers))
        try:
            yield run
        except BaseException:
            run.close(ok=False)
            raise
        finally:
            torch.set_num_threads(threads)
        run.close(ok=True)


class _LocalRun:
    """Forked, as torch's DataLoader workers are: a spawned worker re-imports the command's
    main module and torch, seconds per worker. The workers run Pillow and NumPy (torch only to
    resize images that are not the model's size, with one thread)."""
    startup_seconds = 0.0

    def __init__(self, workers: int, device, size: int):
        self.workers, self.device, self.size = workers, device, size
        self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=init_worker) if workers else None

    def run(self, tasks, model):
        if self.pool is None:
            for task in tasks:
                images, kept, failed = read_task(task, self.size)
                yield task, write_task(task, run_model(model, images, self.device), kept, failed), failed
            return
        limit = self.workers * PENDING_PER_WORKER
        reading, writing = deque(), deque()

        def model_step():
            task, job = reading.popleft()
            images, kept, failed = job.get()
            outputs = run_model(model, images, self.device)
            writing.append((task, failed, self.pool.apply_async(write_task, (task, outputs, kept, failed))))

        def finished(keep: int):
            while len(writing) > keep:
                task, failed, job = writing.popleft()
                yield task, job.get(), failed

        for task in tasks:
            reading.append((task, self.pool.apply_async(read_task, (task, self.size))))
            if len(reading) >= limit:
                model_step()
                yield from finished(limit - 1)
        while reading:
            model_step()
            yield from finished(limit - 1)
        yield from finished(0)

    def close(self, ok: bool):
        if self.pool is None:
            return
        if ok:
            self.pool.close()
        else:
            self.pool.terminate()   # Ctrl-C or an error: workers stop; atomic writes leave no partial file
        self.pool.join()


# ---- Ray: Ray Data with an actor pool for the model

def import_ray():
    # ray.init retries a GCS that accepts connections but does not answer (a proxy, a wrong port)
    # once a second, 20 times by default; read when ray is imported, so set before.
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", "5")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CifarlabError(RAY_INSTALL) from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A one-line error naming `address` unless a TCP connection to it opens within `timeout`
    (ray.init would otherwise retry for a minute or more)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise CifarlabError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise CifarlabError(f"cannot reach the Ray cluster at {address!r}: {reason}") from None


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus, self.actors, self.connect_timeout = num_cpus, actors, connect_timeout
        if actors is not None and actors < 1:
            raise CifarlabError(f"--ray-actors must be a positive integer, got {actors}")
        if num_cpus is not None and num_cpus < 1:
            raise CifarlabError(f"--ray-cpus must be a positive integer, got {num_cpus}")

    @contextmanager
    def session(self, ckpt, device, size):
        started = time.perf_counter()   # importing Ray (and Ray Data: ~0.7 s) is part of its start-up
        ray = import_ray()
        owned = self._connect(ray)
        try:
            yield _RayRun(ray, ckpt, size, self.actors, time.perf_counter() - started)
        finally:
            if owned:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Start or join Ray; True when this call did (and so must shut it down)."""
        if ray.is_initialized():
            return False
        where = self.address
        if where:
            if self.num_cpus is not None:
                raise CifarlabError("--ray-cpus sizes a local Ray instance; it cannot be given with --ray-address "
                                    "(the cluster has its own CPUs)")
            check_reachable(where, self.connect_timeout)
        options = dict(address=where) if where else dict(address="local", num_cpus=self.num_cpus or os.cpu_count(),
                                                         include_dashboard=False)
        with _stderr_kept_unless_failed() as failed:
            try:
                ray.init(**options, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
            except Exception as e:
                failed.append(True)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise CifarlabError(f"cannot {'join the Ray cluster at ' + repr(where) if where else 'start Ray'}: "
                                    f"{first}") from None
        return True


@contextmanager
def _stderr_kept_unless_failed():
    """Ray's C++ client logs every failed connection attempt to file descriptor 2; when joining
    fails, the one-line error replaces those lines; otherwise they are passed on."""
    import sys
    import tempfile
    failed: list = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield failed
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                os.write(2, held.read())


class _RayRun:
    """On CPUs, each Ray task runs whole tasks of the job (read, model, write): the model costs a
    few microseconds an image, so a model actor holding a CPU for it alone left the reading and
    writing one CPU fewer (on 2 CPUs: 0.17x the local engine). Tuned on a 2-CPU local instance
    writing 10,000 PNGs (BENCHMARKS.md), the CPU path's start-up does what Ray would otherwise
    do on the job's clock:

    - the worker processes are warmed, one Ray task a CPU importing torch and Ray Data's map
      code and building the model, which each worker keeps (`_worker_model`): a fresh worker
      spends ~2-3 s on imports, and actors always start fresh processes;
    - Ray Data's own actors are started and waited for (`_wait_for_ray_data_actors`);
    - Ray Data's per-operator resource reservation is off for this pipeline: with it, the one
      map operator was given half the CPUs, and on 2 CPUs the first tasks ran one at a time;
    - each Ray task runs `TASKS_PER_RAY_TASK` of the job's tasks (1,024 images at the default
      batch), fewer when that would leave CPUs idle: Ray Data's scheduling costs tens of
      milliseconds a task (256 images a Ray task: 4,200 images/s; 1,024: 5,300).

    With GPUs, the model runs in GPU actors and Ray tasks read and write on the CPUs."""
    workers = 0

    def __init__(self, ray, ckpt, size, actors, startup_seconds):
        self.ray, self.ckpt, self.size, self.actors = ray, ckpt, size, actors
        started = time.perf_counter()
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.workers = actors or self.gpus or max(1, int(resources.get("CPU", 1)))
        self.key = _checkpoint_key(ckpt)
        if not self.gpus:
            self._warm_workers()
        self.startup_seconds = startup_seconds + time.perf_counter() - started

    def _warm_workers(self):
        """One Ray task a CPU, submitted at once, so each lands in its own idle worker, then a
        one-row Ray Data run, which starts Ray Data's own actors."""
        ray = self.ray
        warm = ray.remote(num_cpus=1)(_warm_worker)
        ckpt = ray.put(self.ckpt)
        ray.get([warm.remote(ckpt, self.key) for _ in range(self.workers)])
        with self._data_context():
            ray.data.range(1, override_num_blocks=1).map_batches(_identity).take_all()
        _wait_for_ray_data_actors(ray)

    @contextmanager
    def _data_context(self):
        """Ray Data's settings for this job, restored after it (they are the process's)."""
        context = self.ray.data.DataContext.get_current()
        settings = {"enable_progress_bars": False, "print_on_execution_start": False}
        if not self.gpus:
            settings["op_resource_reservation_enabled"] = False
        saved = {name: getattr(context, name) for name in settings}
        for name, value in settings.items():
            setattr(context, name, value)
        try:
            yield context
        finally:
            for name, value in saved.items():
                setattr(context, name, value)

    def run(self, tasks, model):
        if not tasks:
            return
        with self._data_context():
            yield from self._run(tasks)

    def _run(self, tasks):
        ray = self.ray
        per_ray_task = max(1, min(TASKS_PER_RAY_TASK, len(tasks) // (2 * self.workers)))
        blocks = -(-len(tasks) // per_ray_task)
        rows = ray.data.from_items([{"task": json.dumps(t)} for t in tasks], override_num_blocks=blocks)
        if self.gpus:
            rows = rows.map(_ray_read, fn_kwargs={"size": self.size})
            rows = rows.map_batches(_RayModel, fn_constructor_kwargs={"ckpt": self.ckpt, "gpu": True},
                                    batch_size=1, batch_format="numpy",
                                    compute=ray.data.ActorPoolStrategy(size=self.workers), num_gpus=1)
            rows = rows.map(_ray_write)
        else:
            rows = rows.map_batches(_run_tasks, fn_kwargs={"ckpt": self.ckpt, "key": self.key, "size": self.size},
                                    batch_size=per_ray_task, batch_format="numpy", num_cpus=1,
                                    **({"concurrency": self.actors} if self.actors else {}))
        for row in rows.iter_rows():
            yield json.loads(row["task"]), int(row["written"]), json.loads(row["failed"])


def _checkpoint_key(ckpt) -> str:
    """Names a checkpoint's network for the workers' cache: its weights' bytes, hashed."""
    import hashlib
    digest = hashlib.sha256(json.dumps([ckpt["model"], ckpt["model_kwargs"], ckpt["in_shape"],
                                        ckpt["out_shape"]], sort_keys=True).encode())
    for name, value in sorted(ckpt["state_dict"].items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_WORKER_MODELS: dict = {}   # in a Ray worker process: checkpoint key -> its network, built once


def _worker_model(ckpt, key):
    model = _WORKER_MODELS.get(key)
    if model is None:
        from .artifact import build_from_checkpoint
        torch.set_num_threads(1)
        _WORKER_MODELS.clear()
        model = _WORKER_MODELS[key] = build_from_checkpoint(ckpt)
    return model


def _warm_worker(ckpt, key):
    try:   # what a Ray Data map task imports first: ~0.8 s in a fresh worker, which then started late
        import ray.data._internal.execution.operators.map_operator  # noqa: F401
    except ImportError:
        pass
    _worker_model(ckpt, key)
    return os.getpid()


def _wait_for_ray_data_actors(ray):
    """Ray Data starts its own actors (statistics, an autoscaling coordinator) on first use, and
    does not wait for them: a fresh actor process importing Ray Data took ~1.2 s of CPU in the
    first seconds of the job. Wait here, in the start-up, so the job's clock does not pay it.
    These are Ray Data internals; when they move, the job still runs, only its start is slower."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
        from ray.data._internal.stats import get_or_create_stats_actor
        actors = [get_or_create_autoscaling_coordinator(), get_or_create_stats_actor()]
        ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=60)
    except Exception:   # noqa: BLE001 -- an optimisation of the start-up only
        pass


def _identity(batch):
    return batch


def _run_tasks(batch, ckpt, key, size):
    """A Ray task: whole tasks of the job (read, model, write), as a local worker runs them."""
    model = _worker_model(ckpt, key)
    written, failures = [], []
    for text in batch["task"]:
        task = json.loads(text)
        images, kept, failed = read_task(task, size)
        written.append(write_task(task, run_model(model, images, torch.device("cpu")), kept, failed))
        failures.append(json.dumps(failed))
    return {"task": batch["task"], "written": written, "failed": failures}


def _ray_read(row, size):
    images, kept, failed = read_task(json.loads(row["task"]), size)
    return {"task": row["task"], "images": images, "kept": json.dumps(kept), "failed": json.dumps(failed)}


class _RayModel:
    def __init__(self, ckpt, gpu: bool):
        from .artifact import build_from_checkpoint
        self.device = torch.device("cuda" if gpu else "cpu")
        self.model = build_from_checkpoint(ckpt).to(self.device)

    def __call__(self, batch):
        outputs = [run_model(self.model, images, self.device) for images in batch["images"]]
        return {"task": batch["task"], "outputs": outputs, "kept": batch["kept"], "failed": batch["failed"]}


def _ray_write(row):
    task, failed = json.loads(row["task"]), json.loads(row["failed"])
    written = write_task(task, row["outputs"], json.loads(row["kept"]), failed)
    return {"task": row["task"], "written": written, "failed": row["failed"]}


def make_engine(name: str, workers: int | None = None, ray_address: str | None = None,
                ray_cpus: int | None = None, ray_actors: int | None = None):
    if name == "local":
        return LocalEngine(workers if workers is not None else (os.cpu_count() or 1))
    if name == "ray":
        if workers is not None:
            raise CifarlabError("--workers sizes the local engine; with --engine ray use --ray-cpus or --ray-actors")
        return RayEngine(ray_address, ray_cpus, ray_actors)
    raise CifarlabError(f"--engine must be local or ray, got {name!r}")
