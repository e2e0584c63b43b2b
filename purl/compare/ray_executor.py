"""Run the cells of a comparison as Ray tasks, on this machine or on a Ray cluster.

:class:`RayExecutor` has the interface of :class:`~purl.compare.runner.LocalExecutor`:
``run(jobs)`` yields one :class:`~purl.compare.runner.CellOutcome` per job, here in the
order the cells *finish* (``ray.wait``), so ``run_comparison`` appends every row to
``results.csv`` as soon as its cell is done and an interrupted grid resumes cleanly.

* One cell is one Ray task asking for ``compare.cpus_per_task`` CPUs and
  ``compare.gpus_per_task`` GPUs (fractions share a GPU between cells).
* The driver loads the cached dense checkpoint once and ``ray.put``\\ s it; a worker
  builds the data split and the model and loads the weights from that object, so no
  cell pre-trains or reads the checkpoint from disk. A worker process keeps its last
  task, so further cells in the same process skip even that.
* A method that raises is retried inside the task by :func:`~purl.compare.runner.execute_cell`
  (except a deterministic error, a PurlError or a full disk: recorded at once);
  a Ray-level failure (worker crash, an error outside the method) is resubmitted,
  all within ``compare.max_retries`` retries, then recorded as a failed row naming
  the cell and the error. Other cells are never affected.
* Only the driver writes the output folder (it holds its lock; on a cluster a worker's disk is another
  machine's): a worker runs its cell in a private temporary folder seeded with the cell folder's files
  (an interrupted agent cell resumes from its checkpoint) and returns what it wrote with the outcome;
  the driver writes those files into ``cells/<cell>/``. A worker that dies takes its partial files with it.
* Ray is imported lazily: without it, constructing the executor raises one
  :class:`~purl.errors.PurlError` saying how to install it. A local Ray instance is
  started only when none is running and no address is given, and only an instance (or
  connection) this executor made is shut down by :meth:`RayExecutor.close`.

Workers must be able to import ``purl`` and the method runners (``baselines``,
``agents``): a local instance inherits the driver's working directory and environment;
on a cluster, install the project on every node or pass ``runtime_env={"working_dir": "."}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from purl.compare.runner import CellJob, CellOutcome, _base_row, execute_cell
from purl.config import CompareConfig, ExperimentConfig
from purl.errors import ConfigError, PurlError

log = logging.getLogger(__name__)

NO_RAY = "the ray executor needs Ray: pip install -e '.[ray]'"

# Per worker process: the last Task built (key -> Task), reused by later cells of the same comparison.
_WORKER_TASKS: dict[tuple[str, str, str], Any] = {}


class RayExecutor:
    """Run each cell as a Ray task; yield outcomes as they complete.

    ``address`` (default: ``compare.ray_address``) connects to an existing cluster
    (``"auto"``, ``"ray://head:10001"``, ...); without one, a Ray instance already
    initialised in this process is used, else a local one is started with ``num_cpus``
    CPUs (default: all). ``runtime_env`` is passed to ``ray.init`` when this executor
    connects or starts Ray.
    """

    def __init__(
        self,
        compare_config: CompareConfig,
        device: str,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise PurlError(NO_RAY) from None
        self._ray = ray
        self.compare = compare_config
        self.device = str(device)
        self.address = address if address is not None else compare_config.ray_address
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env
        self.started = False  # True while Ray was initialised (started or connected) by this executor
        self._remote: Any = None
        self._payloads: dict[tuple[str, int, int], Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> Any:
        ray = self._ray
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            if self.runtime_env is not None:
                quiet["runtime_env"] = self.runtime_env
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, **quiet)
            self.started = True
            try:
                self._check_resources()
            except BaseException:
                self.close()
                raise
        if self._remote is None:
            self._remote = ray.remote(run_cell_task)
        return ray

    def _check_resources(self) -> None:
        """A request no node can ever satisfy would wait forever: fail (local) or warn (cluster) now."""
        total = self._ray.cluster_resources()
        cpus, gpus = self.compare.cpus_per_task, self.compare.gpus_per_task
        if cpus <= total.get("CPU", 0.0) and gpus <= total.get("GPU", 0.0):
            return
        message = (f"each cell asks for compare.cpus_per_task={cpus:g} CPUs and compare.gpus_per_task={gpus:g} "
                   f"GPUs, but the Ray cluster has {total.get('CPU', 0.0):g} CPUs and {total.get('GPU', 0.0):g} "
                   "GPUs; lower them or add nodes")
        if self.address:
            log.warning("%s (cells wait until an autoscaler adds such a node)", message)
        else:
            raise ConfigError(message)

    def close(self) -> None:
        """Shut Ray down if (and only if) this executor started or connected it. Idempotent."""
        if self.started:
            self.started = False
            self._remote = None
            self._payloads.clear()
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ running
    def _payload_ref(self, job: CellJob) -> tuple[Any, str]:
        """The dense checkpoint of ``job``'s task in the object store (put once) and a key naming it."""
        from purl.checkpoint import load_checkpoint
        from purl.task import dense_checkpoint_path

        path = dense_checkpoint_path(job.config)
        if not path.is_file():  # normally the CLI has built the task already; else pre-train here, once
            from purl.runtime import resolve_device
            from purl.task import build_task

            build_task(job.config, resolve_device(self.device), progress=False)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._payloads:
            self._payloads[key] = self._ray.put(load_checkpoint(path))
        return self._payloads[key], ":".join(map(str, key))

    def run(self, jobs: list[tuple[CellJob, float | None]]) -> Iterator[CellOutcome]:
        """Submit every job at once; yield each outcome as its task finishes (not in submission order)."""
        if not jobs:
            return
        ray = self._connect()
        from ray.exceptions import RayError

        threads = max(1, int(self.compare.cpus_per_task))
        options = {"num_cpus": self.compare.cpus_per_task, "num_gpus": self.compare.gpus_per_task,
                   "max_retries": 0}  # Ray-level retries are done here, so that they are counted and recorded
        pending: dict[Any, tuple[CellJob, float | None, list[str]]] = {}

        def submit(job: CellJob, effective: float | None, failures: list[str]) -> None:
            payload, key = self._payload_ref(job)
            # Retries left after Ray-level failures, so that a cell never runs more than max_retries + 1 times.
            attempt_job = dataclasses.replace(job, max_retries=job.max_retries - len(failures))
            ref = self._remote.options(name=f"purl-cell:{job.cell.slug}", **options).remote(
                attempt_job, effective, (payload,), key, threads, self.compare.gpus_per_task,
                pack_folder(job.cell_dir))  # what an earlier attempt left (an agent's checkpoint): resume from it
            pending[ref] = (job, effective, failures)

        try:
            for job, effective in jobs:
                submit(job, effective, [])
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job, effective, failures = pending.pop(ready[0])
                try:
                    outcome: CellOutcome = ray.get(ready[0])
                except RayError as exc:
                    failures.append(f"attempt {len(failures) + 1}: {describe_ray_error(exc)}")
                    if len(failures) <= job.max_retries:
                        log.warning("cell %s: Ray task failed (%s); resubmitting", job.cell.slug, failures[-1])
                        submit(job, effective, failures)
                    else:
                        yield failed_outcome(job, failures)
                    continue
                unpack_folder(outcome.files, job.cell_dir)  # the driver is the only writer of the output folder
                outcome.files = {}
                yield merge_failures(outcome, failures) if failures else outcome
        finally:
            for ref in pending:  # interrupted (Ctrl-C, consumer stopped): do not leave cells running
                ray.cancel(ref, force=True)


def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative POSIX path: content}`` (empty when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def unpack_folder(files: Mapping[str, bytes], folder: Path) -> None:
    """Write ``files`` (from :func:`pack_folder`) under ``folder``, each atomically; refuses paths leaving it."""
    from purl.checkpoint import atomic_write_bytes

    root = folder.resolve()
    for relative, content in files.items():
        path = (folder / relative).resolve()
        if root not in path.parents:
            raise PurlError(f"a Ray worker returned the file '{relative}', outside its cell folder '{folder}'")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, lambda handle, data=content: handle.write(data))


def describe_ray_error(exc: BaseException) -> str:
    """``Type: first line`` of a Ray error, unwrapping a RayTaskError to the exception raised in the task."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failed_outcome(job: CellJob, failures: list[str]) -> CellOutcome:
    """The failed row of a cell whose Ray task failed on every attempt."""
    error = f"Ray task of cell {job.cell.slug} failed: " + " | ".join(failures)
    row = _base_row(job) | {"status": "failed", "error": error, "attempts": len(failures)}
    return CellOutcome(job.cell, row, failed=True, messages=list(failures))


def merge_failures(outcome: CellOutcome, failures: list[str]) -> CellOutcome:
    """Count earlier Ray-level failed attempts in a cell's final outcome (and its error, if it failed too)."""
    row = dict(outcome.row)
    attempts = int(row.get("attempts") or 1)
    shifted = [_shift_attempt(message, len(failures)) for message in outcome.messages]
    messages = list(failures) + shifted
    row["attempts"] = attempts + len(failures)
    if outcome.failed:
        row["error"] = " | ".join(messages)
    return CellOutcome(outcome.cell, row, failed=outcome.failed, messages=messages)


def _shift_attempt(message: str, offset: int) -> str:
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("attempt ") and head[8:].isdigit():
        return f"attempt {int(head[8:]) + offset}: {rest}"
    return message


# ----------------------------------------------------------------------------- worker side


def worker_device(job: CellJob, gpus_per_task: float) -> str:
    """The device inside a Ray task.

    With GPUs requested, Ray makes the task's GPU(s) the only visible ones, so a CUDA run
    (or ``device: auto``, even when the driver itself has no GPU) uses ``cuda`` (= cuda:0
    of the task). Without, the driver's device is used as is.
    """
    if gpus_per_task > 0 and (job.device.startswith("cuda") or job.config.device == "auto"):
        return "cuda"
    return job.device


def task_from_payload(config: ExperimentConfig, device: Any, payload: dict[str, Any]) -> Any:
    """A :class:`~purl.task.Task` from a dense checkpoint payload: as ``build_task`` on a cache hit, no disk read."""
    from purl.checkpoint import load_weights
    from purl.pruning import profile_model
    from purl.runtime import seed_everything
    from purl.task import Task, dense_checkpoint_path, load_data, new_model
    from purl.training import evaluate

    path = dense_checkpoint_path(config)
    data = load_data(config)
    seed_everything(config.seed)
    model = new_model(config, data)
    load_weights(model, payload, path)
    model.to(device)
    test_loader = data.loader("test", config.data.eval_batch_size, num_workers=config.data.num_workers)
    dense_test = evaluate(model, test_loader, device=device)
    profiles = profile_model(model, data.input_shape)
    seconds = float(payload.get("meta", {}).get("pretrain_seconds", 0.0))
    return Task(config, data, model, device, Path(path), dense_test, profiles, seconds, True)


def run_cell_task(
    job: CellJob, effective: float | None, payload_box: tuple[Any], payload_key: str, threads: int,
    gpus_per_task: float, inputs: Mapping[str, bytes] | None = None,
) -> CellOutcome:
    """Body of one Ray task: (re)use the worker's Task for this comparison, then run the cell.

    ``payload_box`` holds the checkpoint's ObjectRef inside a tuple so that Ray does not
    fetch it unless this worker has to build the task. The worker never writes the output folder (the
    driver holds its lock, and on a cluster the worker's disk is another machine's): the cell runs in a
    private temporary folder seeded with ``inputs`` (the cell folder's files the driver sent, so an agent
    resumes from its checkpoint), and the files it wrote travel back in the outcome for the driver to write.
    """
    import ray
    import torch

    from purl.runtime import resolve_device

    torch.set_num_threads(threads)
    device = resolve_device(worker_device(job, gpus_per_task))
    # The whole config, not just purl.task.task_identity: the Task carries the grid's config, which
    # fine-tuning and evaluation read, so a worker reuses a Task only for the same grid.
    key = (json.dumps(job.config.to_dict(), sort_keys=True), str(device), payload_key)
    task = _WORKER_TASKS.get(key)
    if task is None:
        _WORKER_TASKS.clear()
        task = task_from_payload(job.config, device, ray.get(payload_box[0]))
        _WORKER_TASKS[key] = task
    with tempfile.TemporaryDirectory(prefix="purl-cell-") as scratch:
        folder = Path(scratch) / job.cell_dir.name
        unpack_folder(inputs or {}, folder)
        outcome = execute_cell(dataclasses.replace(job, cell_dir=folder), task, effective)
        outcome.files = pack_folder(folder)
    return outcome
