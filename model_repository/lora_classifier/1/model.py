"""Triton Python-backend model `lora_classifier`: tensors in, adapter_manager calls, tensors out.

All logic lives in `adapter_manager.service`; this file converts between Triton tensors and Python
objects, maps domain errors to `TritonError`, and keeps the per-model metrics.
"""

import os
import sys

# The backend stub's interpreter ignores PYTHONPATH; take the environment's packages from our own variable,
# and from it alone: the stub runs the system Python, whose site directories may hold other builds of the same
# packages (on the GPU machine, ones built for numpy 2 that numpy 1.x cannot import), which a venv never sees.
_OWN_PATHS = [p for p in os.environ.get("LORA_CLASSIFIER_PYTHONPATH", "").split(os.pathsep) if p]
if _OWN_PATHS:
    import site

    _SYSTEM_SITES = {*site.getsitepackages(), site.getusersitepackages()}
    sys.path[:] = [p for p in sys.path if p not in _SYSTEM_SITES]
for _path in reversed(_OWN_PATHS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# OpenMP threads that spin while they wait burn the cores that tritonserver, the shim and the other
# instances need; on a busy CPU node spinning made batches up to 7x slower (docs/benchmarks.md). Set
# before torch loads OpenMP; an operator's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same for the tokenizer: its rayon pool spins too, and each instance tokenizes its own batches while the
# others use the other cores. Measured in the stub at 32 clients with the pool, tokenizing a batch of about 7 texts
# took 1.5 ms of wall time; on one thread, in-process, such a batch takes 0.25 ms (bench/levers.md).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import logging
import subprocess
import time
from collections import Counter

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from lora_core.commands import model_id_or_as_given
from lora_core.control_token import authorize_control
from adapter_manager.counters import PendingCounts
from adapter_manager.engine import AdapterEngine
from lora_core.errors import AdapterError, InternalError, InvalidRequest, Unauthorized, to_wire
from lora_core.metric_names import (
    LORA_DESIRED_STATE_GENERATION,
    LORA_FAILURES_TOTAL,
    LORA_LOAD_FAILURES_TOTAL,
    LORA_LOAD_SECONDS,
    LORA_REQUESTS_TOTAL,
    LORA_TEXTS_TOTAL,
)
from adapter_manager.desired_state import desired_state_store
from adapter_manager.memory import start_memory_trimmer
from adapter_manager.outputs_index import IndexRefresher
from adapter_manager.service import AdapterService, ClassifyRequest
from adapter_manager.settings import Settings

log = logging.getLogger("lora_classifier")
# How often the per-model request, text and failure counts reach tritonserver's metrics.
METRICS_FLUSH_S = 1.0


def _triton_error(error: AdapterError) -> "pb_utils.TritonError":
    # Looked up by name at each call: the stub adds TritonError to pb_utils only after this module is imported.
    code = getattr(pb_utils.TritonError, error.triton_code)
    return pb_utils.TritonError(_utf8_text(to_wire(error)), code)


def _utf8_text(text: str) -> str:
    """`text` encodable as UTF-8. In the stub, where the file-system encoding is ASCII, a file name that
    reaches a message (an OS error's text, say) carries its non-ASCII bytes as lone surrogates, which the
    stub cannot send; they become the bytes they stand for (or U+FFFD)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace")


class TritonPythonModel:
    def initialize(self, args):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.model_config = json.loads(args["model_config"])
        self.instance = args["model_instance_name"]
        _exit_with_tritonserver()
        _log_filesystem_encoding()
        self._setup_settings()
        self._setup_threads()
        self._setup_service(args)
        self._setup_metrics()
        start_memory_trimmer(self.settings.memory_trim_seconds)
        self._outputs_refresher = IndexRefresher(self.service.outputs, self.settings.models_index_seconds).start()
        self.service.sync_before_ready()  # everything the desired state lists is loaded before the first request
        self._warm_up()
        self._publish_state_metrics()
        log.info(
            "%s ready on %s with %d adapters (numpy %s)",
            self.instance,
            self.service.engine.device,
            len(self.service.engine.resident()),
            np.__version__,
        )

    def _setup_settings(self) -> None:
        parameters = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        self.settings = Settings.load(parameters)
        if not self.settings.control_token:
            log.warning(
                "%s: CONTROL_TOKEN is not set: every control operation (load, unload, list, status) is refused",
                self.instance,
            )

    def _setup_threads(self) -> None:
        threads = self.settings.torch_threads
        if threads == 0:  # share the cores among this model's CPU instances
            cpu_instances = sum(
                int(group.get("count", 1))
                for group in self.model_config.get("instance_group", [])
                if group.get("kind", "KIND_CPU") == "KIND_CPU"
            )
            threads = max(1, (os.cpu_count() or 1) // max(1, cpu_instances))
        torch.set_num_threads(threads)

    def _setup_service(self, args) -> None:
        device = f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"
        engine = AdapterEngine.from_settings(self.settings, device=device)
        manifest = desired_state_store(self.settings)
        self.service = AdapterService(
            engine, manifest, self.instance, self.settings.max_text_chars, self.settings.max_adapters
        )

    def _warm_up(self) -> None:
        """A full batch through the encoder before the first request: a fresh instance's first forward pays for
        allocations and kernel choices, which a flood right after a start would otherwise meet as a first batch
        up to twice as slow, and admission as a queue it did not expect."""
        rows = max(1, int(self.model_config.get("max_batch_size") or 1))
        seconds = self.service.engine.warm_up(rows)
        log.info("%s: a warm-up batch of %d rows took %.3f s", self.instance, rows, seconds)

    def _setup_metrics(self) -> None:
        counter, gauge = pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        self._families = {
            "requests": pb_utils.MetricFamily(LORA_REQUESTS_TOTAL, "Requests per model_id and instance", counter),
            "texts": pb_utils.MetricFamily(LORA_TEXTS_TOTAL, "Texts classified per model_id and instance", counter),
            "failures": pb_utils.MetricFamily(
                LORA_FAILURES_TOTAL, "Failed requests per model_id and instance", counter
            ),
            "load_seconds": pb_utils.MetricFamily(
                LORA_LOAD_SECONDS, "Duration of the last load per model_id and instance", gauge
            ),
            "load_failures": pb_utils.MetricFamily(
                LORA_LOAD_FAILURES_TOTAL, "Loads that failed per instance and error code (the alert's)", counter
            ),
        }
        self._load_failures_published: Counter = Counter()
        self._metrics = {}
        # The node agent reports the least of these as the node's applied revision (lora_cluster.node_agent).
        # A family must outlive its metrics: Triton refuses a metric whose family was collected.
        self._families["applied"] = pb_utils.MetricFamily(
            LORA_DESIRED_STATE_GENERATION, "Generation (etcd: revision) of the desired state applied", gauge
        )
        self._applied = self._families["applied"].Metric(labels={"instance": self.instance})
        self._applied_published = -1
        self._counts = PendingCounts(self._send_count, METRICS_FLUSH_S).start()

    def _send_count(self, key, count: int) -> None:
        family, model_id = key
        self._metric(family, model_id).increment(count)

    def _publish_state_metrics(self) -> None:
        self._publish_applied_generation()
        self._publish_load_failures()

    def _publish_applied_generation(self) -> None:
        generation = self.service.applied_generation
        if generation != self._applied_published:  # a round trip to tritonserver: only on a change
            self._applied.set(generation)
            self._applied_published = generation

    def _publish_load_failures(self) -> None:
        """Loads that failed here (asked for, or from the desired state) since the last call, by error code."""
        for code, count in self.service.load_failures.items():
            new = count - self._load_failures_published[code]
            if new > 0:
                self._metric("load_failures", code, label="code").increment(new)
                self._load_failures_published[code] = count

    def _metric(self, family: str, value: str, label: str = "model_id"):
        key = (family, value)
        if key not in self._metrics:
            labels = {label: value, "instance": self.instance}
            self._metrics[key] = self._families[family].Metric(labels=labels)
        return self._metrics[key]

    # -------------------------------------------------------------------------------------- execute

    def execute(self, requests):
        # The desired state is checked by each control operation, and beside each batch's forward
        # (AdapterService.classify_current), never failing a batch.
        started = time.perf_counter()
        responses = [None] * len(requests)
        data = []  # (the request's index, its groups, whether it asked for per-group answers, the outputs it names)
        for i, request in enumerate(requests):
            control = pb_utils.get_input_tensor_by_name(request, "CONTROL")
            if control is not None:
                responses[i] = self._control(control)
                continue
            try:
                data.append((i, *_classify_groups(request), _requested_outputs(request)))
            except AdapterError as exc:
                responses[i] = pb_utils.InferenceResponse(error=_triton_error(exc))
        if data:
            for (i, *_), answer in zip(data, self._classify(data, started)):
                responses[i] = answer
        try:
            self._publish_state_metrics()
        except Exception:  # a metric is never worth failing a batch; the next batch publishes it
            log.exception("%s: publishing the state metrics failed", self.instance)
        return responses

    def _classify(self, data, started: float):
        """One response per Triton request of `data`: every group of every request classified together."""
        groups = [group for _, request_groups, _, _ in data for group in request_groups]
        try:
            answers = self.service.classify_current(groups)
        except AdapterError as exc:
            answers = [exc] * len(groups)
        except Exception:
            log.exception("%s: classify failed", self.instance)
            answers = [InternalError("classification failed; see the server log")] * len(groups)
        # How long this batch has executed, returned with each answer: the shim takes it from the round trip to
        # know how long the request waited before its batch started (api_shim/admission.py).
        execute_us = int((time.perf_counter() - started) * 1e6)
        self._count(groups, answers)
        responses = []
        start = 0
        for _, request_groups, per_group, wanted in data:
            mine = answers[start : start + len(request_groups)]
            start += len(request_groups)
            if not per_group and isinstance(mine[0], AdapterError):
                responses.append(pb_utils.InferenceResponse(error=_triton_error(mine[0])))
            else:
                tensors = _output_tensors(request_groups, mine, execute_us, wanted)
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _count(self, groups, answers) -> None:
        """Each group is a client's request: counted per model, in memory; a thread sends the sums to
        tritonserver (each update is a round trip to it) every METRICS_FLUSH_S (adapter_manager.counters)."""
        counts: Counter = Counter()
        for group, answer in zip(groups, answers):
            known = {m for m in set(group.model_ids) if self.service.engine.is_loaded(m)}
            if isinstance(answer, AdapterError):
                for model_id in known or {"_unknown"}:
                    counts["failures", model_id] += 1
                continue
            for model_id in known:
                counts["requests", model_id] += 1
                counts["texts", model_id] += sum(1 for m in group.model_ids if m == model_id)
        self._counts.add(counts)

    def _control(self, tensor):
        started = time.perf_counter()
        try:
            raw = tensor.as_numpy().reshape(-1)
            if raw.size != 1:
                raise InvalidRequest("CONTROL takes exactly one JSON document")
            try:
                document = json.loads(_decode(raw[0], "CONTROL"))
            except ValueError as exc:
                raise InvalidRequest(f"CONTROL is not valid JSON: {exc}") from None
            answer = self.service.control(authorize_control(document, self.settings.control_token))
        except Unauthorized as exc:
            log.warning("%s: control operation refused: %s", self.instance, exc.message)
            return pb_utils.InferenceResponse(error=_triton_error(exc))
        except AdapterError as exc:
            return pb_utils.InferenceResponse(error=_triton_error(exc))
        except Exception:
            log.exception("%s: control operation failed", self.instance)
            return pb_utils.InferenceResponse(
                error=_triton_error(InternalError("control operation failed; see the server log"))
            )
        if answer.get("status") == "loaded" and answer.get("changed"):
            self._metric("load_seconds", answer["model_id"]).set(time.perf_counter() - started)
        payload = np.array([[_utf8_text(json.dumps(answer, ensure_ascii=False)).encode("utf-8")]], dtype=object)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("CONTROL_RESULT", payload)])

    def finalize(self):
        log.info("%s stopping", self.instance)
        refresher = getattr(self, "_outputs_refresher", None)  # absent when initialize failed early
        if refresher is not None:
            refresher.stop()
        counts = getattr(self, "_counts", None)
        if counts is not None:
            counts.close()
        if getattr(self, "service", None) is not None:
            self.service.close()
        self.service = None


# Kills the stub (pid $1, started at clock tick $3) once its parent tritonserver ($2) is gone. Seen with
# Triton 2.51: a tritonserver killed (SIGKILL, OOM) while a stub waits on it inside a custom-metric call
# leaves the stub blocked forever, holding the base model's memory; the stub's own parent check then
# deadlocks. It holds the GIL meanwhile, so the watcher is a shell process rather than a thread. It checks
# the start time so that a recycled pid is never killed, and ends by itself when the stub ends.
_WATCHER = """
while fields=$(cat /proc/$1/stat 2>/dev/null); do
  set -- $1 $2 $3 $fields
  [ "${25}" = "$3" ] || exit 0
  [ "$7" = "$2" ] || {
    echo "lora_classifier: tritonserver $2 is gone; killing its backend stub $1" >&2; kill -9 $1; exit 0; }
  sleep 1
done
"""


def _log_filesystem_encoding() -> None:
    """Triton's backend stub embeds Python with an isolated configuration: it ignores PYTHON* variables
    (hence LORA_CLASSIFIER_PYTHONPATH), never calls setlocale, and so runs with an ASCII file-system
    encoding whatever LANG / LC_ALL say. adapter_manager.layout reaches non-ASCII model dirs through their
    UTF-8 bytes (surrogateescape) regardless; this line makes the situation visible in the server log."""
    encoding = sys.getfilesystemencoding()
    if encoding.lower().replace("-", "") != "utf8":
        log.info(
            "file-system encoding is %s (isolated=%d, utf8_mode=%d, LANG=%s, LC_ALL=%s); non-ASCII model dirs "
            "are reached through their UTF-8 bytes",
            encoding,
            sys.flags.isolated,
            sys.flags.utf8_mode,
            os.environ.get("LANG"),
            os.environ.get("LC_ALL"),
        )


def _exit_with_tritonserver() -> None:
    try:
        with open("/proc/self/stat") as handle:
            start = handle.read().rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
        subprocess.Popen(
            ["/bin/sh", "-c", _WATCHER, "lora-classifier-watcher", str(os.getpid()), str(os.getppid()), start],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,  # stderr: the server's log
        )
    except OSError as exc:  # no /proc or no /bin/sh: serve anyway, without the watcher
        log.warning("cannot watch tritonserver (pid %d): %s", os.getppid(), exc)


def _decode(value, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{name} is not valid UTF-8") from None
    return str(value)


def _classify_groups(request) -> tuple[list[ClassifyRequest], bool]:
    """The request's groups of rows, and whether it asked for an answer per group (GROUP given): then each
    group succeeds or fails alone, as if it had been a request of its own. A group is a run of rows with the
    same GROUP value; without GROUP, the whole request is one group."""
    text = pb_utils.get_input_tensor_by_name(request, "TEXT")
    model_id = pb_utils.get_input_tensor_by_name(request, "MODEL_ID")
    if text is None or model_id is None:
        raise InvalidRequest("a request needs TEXT and MODEL_ID, or CONTROL")
    texts = [_decode(v, "TEXT") for v in text.as_numpy().reshape(-1)]
    # Each id in its canonical spelling, the one it was loaded under ('team/job/' is 'team/job').
    model_ids = [model_id_or_as_given(_decode(v, "MODEL_ID")) for v in model_id.as_numpy().reshape(-1)]
    group = pb_utils.get_input_tensor_by_name(request, "GROUP")
    if group is None:
        return [ClassifyRequest(texts=texts, model_ids=model_ids)], False
    marks = group.as_numpy().reshape(-1)  # as many rows as TEXT: Triton refuses inputs whose batch sizes differ
    starts = [0, *(row for row in range(1, len(marks)) if marks[row] != marks[row - 1]), len(marks)]
    return [ClassifyRequest(texts[a:b], model_ids[a:b]) for a, b in zip(starts, starts[1:])], True


def _result_tensors(results, execute_us: int):
    """Rows padded to the widest; a row that is None (its group failed) has no labels."""
    width = max([len(r.labels) for r in results if r is not None], default=1)
    probabilities = np.zeros((len(results), width), dtype=np.float32)
    labels = np.full((len(results), width), b"", dtype=object)
    counts = np.zeros((len(results), 1), dtype=np.int32)
    for row, result in enumerate(results):
        if result is None:
            continue
        n = len(result.labels)
        probabilities[row, :n] = result.probabilities
        labels[row, :n] = [name.encode("utf-8") for name in result.labels]
        counts[row, 0] = n
    return [
        pb_utils.Tensor("PROBABILITIES", probabilities),
        pb_utils.Tensor("LABELS", labels),
        pb_utils.Tensor("NUM_LABELS", counts),
        pb_utils.Tensor("EXECUTE_US", np.full((len(results), 1), execute_us, dtype=np.int64)),
    ]


def _requested_outputs(request) -> frozenset[str]:
    """The outputs the request names; empty when it names none (then Triton returns every output)."""
    names = getattr(request, "requested_output_names", None)  # in the stub since Triton 22.x
    return frozenset(names()) if names is not None else frozenset()


# The outputs made from the results, one row per text (RESULT stands for the others together).
ROW_TENSORS = ("PROBABILITIES", "LABELS", "NUM_LABELS", "EXECUTE_US")


def _output_tensors(groups, answers, execute_us: int, wanted: frozenset[str]):
    """The outputs `wanted` (every one when empty) for these groups' rows. A failed group's rows have no labels
    (NUM_LABELS 0) and its error in ERROR, in the contract's wire form ("[code] message"); a good group's rows an
    empty ERROR. RESULT holds each row as one JSON document, so that a client that asks for it alone gets one
    tensor back instead of five (each costs the stub a share of the response's IPC)."""
    results, errors = [], []
    for group, answer in zip(groups, answers):
        if isinstance(answer, AdapterError):
            results.extend([None] * len(group.texts))
            errors.extend([_utf8_text(to_wire(answer))] * len(group.texts))
        else:
            results.extend(answer)
            errors.extend([""] * len(answer))
    tensors = []
    if not wanted or any(name in wanted for name in ROW_TENSORS):
        tensors += [t for t in _result_tensors(results, execute_us) if not wanted or t.name() in wanted]
    if not wanted or "ERROR" in wanted:
        tensors.append(pb_utils.Tensor("ERROR", np.array([e.encode("utf-8") for e in errors], dtype=object)[:, None]))
    if not wanted or "RESULT" in wanted:
        tensors.append(pb_utils.Tensor("RESULT", _result_documents(results, errors, execute_us)))
    return tensors


def _result_documents(results, errors, execute_us: int):
    """RESULT: per row {"labels": [...], "probabilities": [...], "execute_us": n} or {"error": ..., "execute_us": n}
    (the error in the wire form)."""
    rows = np.empty((len(results), 1), dtype=object)
    for row, (result, error) in enumerate(zip(results, errors)):
        if result is None:
            document = {"error": error, "execute_us": execute_us}
        else:
            document = {
                "labels": list(result.labels),
                "probabilities": result.probabilities.tolist(),  # float32 values as Python floats
                "execute_us": execute_us,
            }
        rows[row, 0] = json.dumps(document, ensure_ascii=False).encode("utf-8")
    return rows
