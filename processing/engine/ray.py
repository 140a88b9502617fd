"""The Ray engine: the same steps as the local engine, as a Ray Data pipeline on a cluster.

What runs where::

    driver (the script)           plans chunks, writes finished chunks and the card; holds no model
    generation service (1 actor)  the request cache and the backend, on the driver's node (the cache
                                  stays on its local disk, so resume works as with the local engine)
    vLLM replicas (GPU actors)    --backend vllm: --num_replicas actors of --tensor_parallel_size GPUs,
                                  each with its own vllm.LLM; the service spreads a call over them
    chunk workers (CPU actors)    Ray Data's actor pool (``map_batches``): each holds a long-lived
                                  sandbox of --ray_worker_cpus programs at a time and runs every step
                                  of a chunk; its LLM calls go to the service

Streaming: while one worker verifies its chunk, another's generation runs in the service,
so GPUs and sandbox CPUs are busy at once. Stage 2's chunks have the local engine's
boundaries and fingerprints and are written by the driver as they arrive (atomically,
marker last), so a crashed driver resumes by skipping them, with either engine. A
worker that dies (its node lost, its process killed) costs the chunk in flight: Ray Data
restarts the actor and runs the chunk again, and the request cache answers what was
already generated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from processing.engine.local import ChunkOutput, ChunksDeferred, LocalEngine, ShardSummary
from processing.generation.types import Answer, AnswersMissing, Backend, Checkpoint, Done, Usage, no_checkpoint

logger = logging.getLogger(__name__)

# The actors' progress bars would interleave in the driver's log: the driver has its own.
QUIET = {"env_vars": {"TQDM_DISABLE": "1"}}
# What a chunk worker's setup returns: process(batch) -> ChunkOutput, and close().
WorkerSetup = Callable[[Any], Any]


class RayUnavailable(ValueError):
    """The cluster cannot run this stage (no Ray, an unreachable address, too few GPUs)."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable(
            "--engine ray needs Ray Data: pip install 'unitcoder[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


class RaySession:
    """This run's hold on a Ray cluster: joined (``--ray_address``, else ``RAY_ADDRESS``, else
    a local Ray started for the run) and checked at start-up; ``close()`` stops the actors
    the run started, and the local Ray if it started one."""

    def __init__(self, address: str | None, gpus_needed: int = 0):
        ray = _ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.started = not ray.is_initialized()
        self.actors: list = []
        if self.started:
            _check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayUnavailable(
                    f"cannot join the Ray cluster at {address} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else 'no answer'}); start it (ray start --head) or "
                    "fix --ray_address / RAY_ADDRESS"
                ) from None
        resources = ray.cluster_resources()
        self.cpus, self.gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0)
        self.address = address or ("local" if self.started else "the current Ray")
        if self.gpus < gpus_needed:
            self.close()
            raise RayUnavailable(
                f"the Ray cluster has {self.gpus:g} GPUs but --backend vllm needs {gpus_needed} "
                "(--num_replicas x --tensor_parallel_size); add GPU nodes or lower --num_replicas"
            )
        ray.data.DataContext.get_current().enable_progress_bars = False  # the driver's bar counts rows

    def workers(self, wanted: int | None, worker_cpus: int) -> int:
        """Chunk workers: ``wanted``, else as many as the cluster's CPUs hold (on a small
        cluster one CPU is left to the driver and the generation service)."""
        if wanted:
            return wanted
        spare = self.cpus - (1 if self.cpus <= 8 else 0)
        return max(1, spare // worker_cpus)

    def start_generation(self, gen_args, replicas: int = 1):
        """The generation service on the driver's node, and a ``RemoteGenerator`` for the
        driver. A model that cannot load or a cache it refuses raises its error here."""
        ray = _ray()
        actor = ray.remote(num_cpus=0, max_concurrency=1024, scheduling_strategy=_driver_node(), runtime_env=QUIET)(
            GenerationService
        )
        service = actor.remote(gen_args, replicas)
        self.actors.append(service)
        try:
            info = ray.get(service.info.remote())
        except ray.exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else RuntimeError(str(exc))) from None
        return service, RemoteGenerator(service, info)

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:  # already gone
                pass
            ray.kill(actor)
        self.actors.clear()
        if self.started and ray.is_initialized():
            ray.shutdown()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Raise ``RayUnavailable`` at once when ``address`` (``host:port`` or ``ray://host:port``)
    does not accept a connection: Ray itself keeps retrying an unreachable address for minutes."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray_address {address} is not host:port (e.g. 10.0.0.1:6379, or ray://10.0.0.1:10001)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it (ray start --head) or fix "
            "--ray_address / RAY_ADDRESS"
        ) from None


def _driver_node():
    """A scheduling strategy that keeps an actor on the driver's node (its local disk)."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


# --------------------------------------------------------------------------- generation


class GenerationService:
    """The one generator of a Ray run (its request cache and backend), served to the chunk
    workers. A Ray actor (threaded): calls are answered one at a time, each call whole (a
    round of a chunk is one engine call, as on the local engine)."""

    def __init__(self, gen_args, replicas: int = 1):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from processing.generation import build_generator

        backend = ReplicaBackend(gen_args, replicas) if gen_args.backend == "vllm" else None
        self.generator = build_generator(gen_args, backend)
        self.lock = threading.Lock()

    def info(self) -> dict:
        return {"model_id": self.generator.model_id, "backend": self.generator.backend.name}

    def answer(self, method: str, prompts: list, sampling, desc: str, step: str | None, allow_missing: bool):
        """(answers as (text, finish_reason) or None, this call's usage, the AnswersMissing
        counts or None)."""
        with self.lock:
            before = dataclasses.replace(self.generator.usage)
            missing = None
            try:
                answers = getattr(self.generator, method)(
                    prompts, sampling, desc=desc, step=step, allow_missing=allow_missing
                )
            except AnswersMissing as exc:
                answers, missing = [], (exc.failed, exc.total, exc.example)
            usage = {
                name: getattr(self.generator.usage, name) - getattr(before, name) for name in Usage.__dataclass_fields__
            }
        return [[None if a is None else (str(a), a.finish_reason) for a in row] for row in answers], usage, missing

    def close(self) -> None:
        if self.generator.cache:
            self.generator.cache.close()


class RemoteGenerator:
    """What the steps see in a chunk worker: the ``Generator`` interface, answered by the
    service. ``usage``/``by_step`` count this worker's calls."""

    def __init__(self, service, info: dict):
        self.service = service
        self.backend = _BackendName(info["backend"], info["model_id"])
        self.usage = Usage()
        self.by_step: dict[str, Usage] = {}

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, conversations, sampling, desc="generating", step=None, allow_missing=False):
        prompts = [[dict(m) for m in conv] for conv in conversations]
        return self._call("generate", prompts, sampling, desc, step, allow_missing)

    def complete(self, texts, sampling, desc="completing", step=None, allow_missing=False):
        return self._call("complete", list(texts), sampling, desc, step, allow_missing)

    def _call(self, method, prompts, sampling, desc, step, allow_missing):
        ray = _ray()
        answers, counts, missing = ray.get(
            self.service.answer.remote(method, prompts, sampling, desc, step, allow_missing)
        )
        usage = Usage(**counts)
        self.usage.add(usage)
        if step:
            self.by_step.setdefault(step, Usage()).add(usage)
        if missing:
            raise AnswersMissing(*missing)
        return [[None if a is None else Answer(a[0], a[1]) for a in row] for row in answers]


@dataclasses.dataclass
class _BackendName:
    name: str
    model_id: str


class ReplicaBackend(Backend):
    """``--backend vllm`` on a cluster: ``replicas`` actors of ``--tensor_parallel_size`` GPUs,
    each holding the vLLM backend (one ``vllm.LLM``). A call is cut into pieces of
    ``--generation_chunk`` requests, each replica working on one piece at a time; answers
    are reported, and made durable, as each piece returns."""

    name = "vllm"

    def __init__(self, gen_args, replicas: int):
        ray = _ray()
        self.piece = gen_args.generation_chunk
        options = replica_options(gen_args)
        self.replicas = [ray.remote(_Replica).options(**options).remote(gen_args) for _ in range(replicas)]
        first = ray.get([r.info.remote() for r in self.replicas])[0]
        self.model_id, self._settings = first["model_id"], first["answer_settings"]

    def answer_settings(self) -> dict:
        return self._settings

    def complete(self, requests: Sequence, done: Done, checkpoint: Checkpoint = no_checkpoint) -> None:
        ray = _ray()
        pieces = [range(i, min(len(requests), i + self.piece)) for i in range(0, len(requests), self.piece)]
        idle, pending = list(self.replicas), {}
        while pieces or pending:
            while idle and pieces:
                replica, piece = idle.pop(0), pieces.pop(0)
                pending[replica.complete.remote([requests[i] for i in piece])] = (replica, piece)
            ready, _ = ray.wait(list(pending), num_returns=1)
            replica, piece = pending.pop(ready[0])
            for position, completion in zip(piece, ray.get(ready[0])):
                done(position, completion)
            checkpoint()
            idle.append(replica)


def replica_options(gen_args) -> dict:
    """The Ray actor options of one vLLM replica: its GPUs, restarted (and its piece run
    again) if it dies."""
    return {"num_gpus": gen_args.tensor_parallel_size, "num_cpus": 1, "max_restarts": -1, "max_task_retries": -1}


class _Replica:
    """One vLLM engine (``vllm.LLM``, built as the local engine builds it) in a GPU actor."""

    def __init__(self, gen_args):
        from processing.generation.generator import build_backend

        self.backend = build_backend(gen_args)

    def info(self) -> dict:
        return {"model_id": self.backend.model_id, "answer_settings": self.backend.answer_settings()}

    def complete(self, requests: list) -> list:
        out: list = [None] * len(requests)

        def done(position, completion):
            out[position] = completion

        self.backend.complete(requests, done)
        return out


# --------------------------------------------------------------------------- chunk workers


class _ChunkWorker:
    """A Ray Data actor: builds the stage's chunk function once (its sandbox lives as long
    as the actor) and runs it on one chunk per call."""

    def __init__(self, setup: WorkerSetup, service, info: dict, defer: tuple):
        logging.basicConfig(level=logging.WARNING)
        self.defer = defer
        self.process, self.error = None, None
        try:
            self.process = setup(RemoteGenerator(service, info))
        except Exception as exc:  # (a node without a sandbox): every chunk reports it; an actor that
            self.error = exc  # raised here would be restarted by Ray Data again and again

    def __call__(self, batch: pa.Table) -> pa.Table:
        indices, status, payloads = [], [], []
        for index, data in zip(batch.column("index").to_pylist(), batch.column("rows").to_pylist()):
            table = pa.ipc.open_stream(data).read_all()
            try:
                if self.error is not None:
                    raise self.error
                output = self.process(table.to_pydict())
                result = ("done", pickle.dumps(output))
            except self.defer as exc:
                result = ("deferred", _pickled_error(exc))
            except Exception as exc:  # carried to the driver, which stops as the local engine would
                result = ("failed", _pickled_error(exc))
            indices.append(index)
            status.append(result[0])
            payloads.append(result[1])
        return pa.table({"index": indices, "status": status, "payload": pa.array(payloads, pa.binary())})

    def __del__(self):
        close = getattr(self.process, "close", None)
        if close:
            close()


def _pickled_error(exc: BaseException) -> bytes:
    """The exception, pickled if it comes back whole; else a RuntimeError with its message."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class RayEngine(LocalEngine):
    """The local engine's chunks, fingerprints, files and finalisation; the chunks run on a
    Ray Data actor pool of ``workers`` actors of ``worker_cpus`` CPUs each."""

    def __init__(self, output_dir, *, service, info: dict, workers: int, worker_cpus: int, **kwargs):
        super().__init__(output_dir, **kwargs)
        self.service, self.info = service, info
        self.workers, self.worker_cpus = workers, worker_cpus

    def run(self, source, setup: WorkerSetup, defer: tuple[type[BaseException], ...] = ()) -> ShardSummary:
        """Like ``LocalEngine.run``, but ``setup(generator)`` builds the chunk function in
        each worker (its sandbox, the steps' settings) instead of being the function."""
        ray = _ray()
        started = time.time()
        plan = self.plan(source)
        if isinstance(plan, ShardSummary):
            return plan
        summary = ShardSummary({}, plan.stop - plan.start)
        markers: dict[int, dict] = {}
        todo = []
        for chunk in plan.chunks:
            marker = self.done_chunk(chunk)
            if marker is None:
                todo.append(chunk)
            else:
                markers[chunk.index] = marker
                summary.chunks_skipped += 1
        if summary.chunks_skipped:
            logger.info("%d of %d chunks done by an earlier run, skipped", summary.chunks_skipped, len(plan.chunks))
        deferred: list[tuple[int, BaseException]] = []
        failure: BaseException | None = None
        if todo:
            by_index = {chunk.index: chunk for chunk in todo}
            items = [{"index": c.index, "rows": _ipc(source.slice(c.offset, c.offset + c.rows))} for c in todo]
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _ChunkWorker,
                fn_constructor_kwargs={"setup": setup, "service": self.service, "info": self.info, "defer": defer},
                batch_size=1,
                batch_format="pyarrow",
                concurrency=min(self.workers, len(todo)),
                num_cpus=self.worker_cpus,
                runtime_env=QUIET,
            )
            bar = tqdm(
                total=sum(c.rows for c in todo), desc=f"shard {self.shard_index + 1}/{self.num_shards}", unit="row"
            )
            for row in dataset.iter_rows():
                chunk = by_index[row["index"]]
                if row["status"] == "done":
                    markers[chunk.index] = self.write_chunk(chunk, pickle.loads(row["payload"]))
                    summary.chunks_run += 1
                    summary.rows_run += chunk.rows
                elif row["status"] == "deferred":
                    exc = pickle.loads(row["payload"])
                    logger.warning("chunk %d of %d left for a rerun: %s", chunk.index + 1, len(plan.chunks), exc)
                    deferred.append((chunk.index, exc))
                else:
                    failure = failure or pickle.loads(row["payload"])
                bar.update(chunk.rows)
            bar.close()
        if failure is not None:
            raise failure
        if deferred:
            deferred.sort(key=lambda item: item[0])
            raise ChunksDeferred([index for index, _ in deferred], len(plan.chunks), deferred[0][1])
        return self.finish(plan, markers, summary, started)


__all__ = [
    "ChunkOutput", "GenerationService", "RayEngine", "RayUnavailable", "RemoteGenerator", "ReplicaBackend",
    "RaySession", "replica_options",
]  # fmt: skip


# --------------------------------------------------------------------------- batch steps over a dataset


def _arrow_batch(table: pa.Table, *, fn: Callable, schema: pa.Schema, kwargs: dict) -> pa.Table:
    """A step (a dict of columns in, a dict of columns out) as a Ray Data batch function."""
    return pa.Table.from_pydict(fn(table.to_pydict(), **kwargs), schema=schema)


def ordered_map(rows, fn: Callable, *, schema: pa.Schema, kwargs: dict, batch_size: int, window: int = 65536):
    """``fn`` (a step over batches of columns) over ``rows`` (a Hugging Face dataset, streaming
    or not, or an Arrow table) in parallel Ray tasks; yields the output as Arrow tables in
    input order (Ray Data's ``preserve_order``), as a single process would produce it.

    The rows go to the cluster ``window`` at a time, read by the driver: memory stays
    bounded on a streamed corpus, and the order is the input's whatever the source (Ray's
    own Hugging Face reader would fetch the Hub's parquet conversion instead, in its order)."""
    ray = _ray()
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    for tables in _windows(rows, batch_size, window):
        mapped = ray.data.from_arrow(tables).map_batches(
            functools.partial(_arrow_batch, fn=fn, schema=schema, kwargs=kwargs),
            batch_size=batch_size,
            batch_format="pyarrow",
            runtime_env=QUIET,
        )
        yield from mapped.iter_batches(batch_size=None, batch_format="pyarrow")


def _windows(rows, batch_size: int, window: int):
    """Lists of Arrow tables of about ``window`` rows in all, in order."""
    if isinstance(rows, pa.Table):
        batches = (rows.slice(start, batch_size * 16) for start in range(0, len(rows), batch_size * 16))
    else:
        batches = rows.with_format("arrow").iter(batch_size=batch_size * 16)
    pending, size = [], 0
    for table in batches:
        pending.append(table)
        size += len(table)
        if size >= window:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending


class _SandboxWorker:
    """An actor that holds a sandbox for its life and runs a sandbox step on batches."""

    def __init__(self, config, step: Callable, kwargs: dict):
        from sandbox import Sandbox

        self.sandbox = Sandbox(config).start()
        self.step, self.kwargs = step, kwargs

    def run(self, table: pa.Table) -> dict:
        return self.step(table.to_pydict(), sandbox=self.sandbox, **self.kwargs)

    def close(self) -> None:
        self.sandbox.close()


class SandboxPool:
    """Sandbox actors of ``worker_cpus`` programs at a time each, for a step that calls a
    sandbox (``step(batch, sandbox=..., **kwargs)``): ``map`` spreads a table over them in
    batches and returns the columns in input order. The actors live until ``close``."""

    def __init__(self, session: RaySession, config, step: Callable, kwargs: dict, workers: int, worker_cpus: int):
        ray = _ray()
        config = dataclasses.replace(config, workers=worker_cpus)
        actor = ray.remote(num_cpus=worker_cpus, max_restarts=-1, max_task_retries=-1, runtime_env=QUIET)
        self.actors = [actor(_SandboxWorker).remote(config, step, kwargs) for _ in range(workers)]
        session.actors.extend(self.actors)

    def map(self, table: pa.Table, batch_size: int) -> dict[str, list]:
        from ray.util import ActorPool

        batches = [table.slice(start, batch_size) for start in range(0, len(table), batch_size)]
        out: dict[str, list] = {}
        for columns in ActorPool(self.actors).map(lambda actor, batch: actor.run.remote(batch), batches):
            for name, values in columns.items():
                out.setdefault(name, []).extend(values)
        return out

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=60)
            except Exception:
                pass
            ray.kill(actor)
