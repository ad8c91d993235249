"""Watching and stopping a job through Flink's REST API (the API behind the web UI).

Beam's job service knows Beam's job id and state; the Flink job id, the liveagg metrics while
the job runs, the job's checkpoints, its final counters and stop-with-savepoint are only in
Flink's REST API, which also outlives the job server. The standard library is enough for the
few calls made here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.metrics.metric import MetricResults, MetricsFilter

from liveagg.transforms.deadletter import NAMESPACE

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELED", "CANCELLED", "DONE", "STOPPED"})
_PREFIX = "liveagg_"  # Beam metric "liveagg/<name>" appears in Flink as "<operator>.liveagg_<name>"
GAUGES = ("lag_seconds/", "kafka_lag_offsets/")
"""Metrics that are values, not counts: their maximum over subtasks is reported, not the sum."""
ACCUMULATOR = "__metricscontainers"
"""The Flink accumulator in which Beam's Flink runner keeps every Beam metric of the job
(``FlinkMetricContainer.ACCUMULATOR_NAME``): it outlives the job's tasks, unlike the metrics
of the REST API's ``/metrics`` endpoints, which go with them."""


class FlinkRestError(RuntimeError):
    """The cluster did not answer, or answered with an error (``status``: the HTTP code)."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or message  # in a few words: "Connection refused", "HTTP 500"

    @property
    def unknown_job(self) -> bool:
        """Whether the cluster answered that it does not know the job (a JobManager that
        restarted without high availability forgets its jobs)."""
        return self.status == 404 or "FlinkJobNotFoundException" in str(self)


class FlinkRest:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            message = f"{method} {self.url}{path}: {e.code} {detail}"
            raise FlinkRestError(message, e.code, f"HTTP {e.code}") from e
        except OSError as e:  # URLError: refused, unreachable; TimeoutError
            reason = getattr(e, "reason", None) or e
            reason = getattr(reason, "strerror", None) or str(reason)
            raise FlinkRestError(f"{method} {self.url}{path}: {e}", reason=reason) from e
        try:
            return json.loads(text) if text else None
        except ValueError as e:  # a JobManager still starting answers with a web page
            raise FlinkRestError(f"{method} {self.url}{path}: not JSON: {text[:200]!r}") from e

    def ui(self, job_id: str) -> str:
        return f"{self.url}/#/job/running/{job_id}/overview"

    def find_job(self, name: str) -> str | None:
        """The id of the newest job called ``name`` (Beam's ``--job_name``), if there is one."""
        jobs = [j for j in self._call("GET", "/jobs/overview")["jobs"] if j["name"] == name]
        return max(jobs, key=lambda j: j["start-time"])["jid"] if jobs else None

    def state(self, job_id: str) -> str:
        return self._call("GET", f"/jobs/{job_id}/status")["status"]

    def checkpoint_dir(self, job_id: str) -> str | None:
        """Where the job's checkpoints go: ``<state.checkpoints.dir>/<job id>``, as the job's
        JobManager is configured (Flink 2 calls the option ``execution.checkpointing.dir``)."""
        config = {
            e["key"]: e["value"] for e in self._call("GET", f"/jobs/{job_id}/jobmanager/config")
        }
        root = config.get("state.checkpoints.dir") or config.get("execution.checkpointing.dir")
        return f"{root.rstrip('/')}/{job_id}" if root else None

    def metrics(self, job_id: str) -> dict[str, float]:
        """liveagg's Beam metrics, summed (counters) or maxed (gauges) over all subtasks."""
        totals: dict[str, float] = {}
        for vertex in self._call("GET", f"/jobs/{job_id}")["vertices"]:
            path = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in self._call("GET", path) if _PREFIX in m["id"]]
            for start in range(0, len(ids), 50):  # keep the query string short
                query = urllib.parse.urlencode({"get": ",".join(ids[start : start + 50])})
                for metric in self._call("GET", f"{path}?{query}&agg=sum,max"):
                    name = metric["id"].split(_PREFIX, 1)[1]
                    if name.startswith(GAUGES):
                        totals[name] = max(totals.get(name, metric["max"]), metric["max"])
                    else:
                        totals[name] = totals.get(name, 0) + metric["sum"]
        return totals

    def latest_restore_point(self, job_id: str) -> str | None:
        """Where the job's newest completed checkpoint or savepoint is, if it has one."""
        latest = self._call("GET", f"/jobs/{job_id}/checkpoints").get("latest") or {}
        done = [latest.get("completed") or {}, latest.get("savepoint") or {}]
        done = [d for d in done if d.get("external_path")]
        newest = max(done, key=lambda d: d.get("latest_ack_timestamp", 0), default={})
        return newest.get("external_path")

    def failure(self, job_id: str) -> str | None:
        """The first line of the job's root exception, if it has failed or restarted."""
        root = self._call("GET", f"/jobs/{job_id}/exceptions").get("root-exception")
        return root.strip().splitlines()[0] if root else None

    def final_metrics(self, job_id: str, timeout_s: float = 30.0) -> MetricResults | None:
        """The Beam metrics of a job that has ended, as Flink kept them in its accumulator:
        summed over the subtasks (they cover its last attempt: a job restarted from a
        checkpoint counts again from there). None when there are none, or the job has not
        ended within ``timeout_s``.

        The REST API answers ``/jobs/<id>`` and ``/jobs/<id>/accumulators`` from a cache of
        the job's execution graph (Flink's ``AbstractExecutionGraphHandler`` and
        ``ExecutionGraphCache``, kept ``web.refresh-interval``, 3 s), unlike ``/status``: just
        after the job has ended they may still be the running job's, whose accumulators lag
        behind its tasks. So they are read once the cached graph says the job has ended.
        """
        if not wait_for(
            lambda: self._call("GET", f"/jobs/{job_id}")["state"] in TERMINAL, timeout_s
        ):
            return None
        found = self._call("GET", f"/jobs/{job_id}/accumulators")["user-task-accumulators"]
        return accumulated_metrics(found)

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")

    def stop_with_savepoint(
        self, job_id: str, target: str | None = None, timeout_s: float = 300.0
    ) -> str:
        """Stop the job after a savepoint (Flink's stop-with-savepoint); returns its location.

        Without ``target`` the cluster's ``state.savepoints.dir`` is used. A job whose
        JobManager is still initializing (restoring, say) cannot take one yet: the request
        is repeated until it can, within ``timeout_s``.
        """
        body: dict[str, Any] = {"drain": False}
        if target:
            body["targetDirectory"] = target
        deadline = time.monotonic() + timeout_s
        trigger = self._call("POST", f"/jobs/{job_id}/stop", body)["request-id"]
        while time.monotonic() < deadline:
            status = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation") or {}
                if "location" in operation:
                    return operation["location"]
                if not initializing(str(operation)):
                    raise FlinkRestError(f"savepoint of {job_id} failed: {operation}")
                time.sleep(1.0)
                trigger = self._call("POST", f"/jobs/{job_id}/stop", body)["request-id"]
                continue
            time.sleep(0.5)
        raise FlinkRestError(f"savepoint of {job_id} not done after {timeout_s:.0f} s")


def accumulated_metrics(accumulators: list[dict[str, Any]]) -> MetricResults | None:
    """Beam metric results from a job's ``user-task-accumulators`` (REST API), or None.

    Beam's Flink runner keeps them in :data:`ACCUMULATOR`, whose value the REST API shows as
    the JSON of Beam's ``MetricResults`` proto (monitoring infos, payloads in base64).
    """
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability.portable_runner import PortableMetrics
    from google.protobuf import json_format

    value = next((a["value"] for a in accumulators if a["name"] == ACCUMULATOR), None)
    if value is None:
        return None
    results = json_format.Parse(
        json.dumps(json.loads(value).get("metrics", {})),
        beam_job_api_pb2.MetricResults(),
        ignore_unknown_fields=True,
    )
    return PortableMetrics(beam_job_api_pb2.GetJobMetricsResponse(metrics=results))


def counter_values(metrics: MetricResults) -> list[tuple[str, int]]:
    """liveagg's counters in Beam metric results, one ``(name, value)`` per step that has
    the counter (a name may come several times: ``cassandra/rows_written`` per sink)."""
    query = metrics.query(MetricsFilter().with_namespace(NAMESPACE))
    return [
        (c.key.metric.name, c.committed if c.committed is not None else c.attempted)
        for c in query[MetricResults.COUNTERS]
    ]


def initializing(error: str) -> bool:
    """Whether Flink refused an operation only because the job is (re)starting: its
    JobManager initializing (restoring, say), or some of its tasks not running yet, as
    after a restart from a checkpoint (``CheckpointCoordinator``: "Not all required tasks
    are currently running"), when a savepoint cannot be triggered."""
    return (
        "JobManager is initializing" in error
        or "Not all required tasks are currently running" in error
    )


def format_metrics(
    metrics: dict[str, float], views: Sequence[str] = (), partitions: Sequence[str] = ()
) -> str:
    """One line per kind: views (lag, live keys, rows), dead letters, Kafka lag.

    ``views`` and ``partitions`` (``topic/partition``) are listed even before the job has
    reported anything for them: a view with rows 0 and live keys 0, a partition with ``-``
    (its lag is not measured yet; the read asks the broker every 5 s).
    """
    found: dict[str, dict[str, float]] = {v: {"rows": 0, "live_keys": 0} for v in views}
    dead: dict[str, float] = {}
    kafka: dict[str, float | None] = dict.fromkeys(partitions)
    for name, value in sorted(metrics.items()):
        kind, _, rest = name.partition("/")
        if kind in ("lag_seconds", "live_keys", "rows"):
            found.setdefault(rest, {})[kind] = value
        elif kind == "dead_letter" and "/" not in rest:
            dead[rest] = value
        elif kind == "kafka_lag_offsets":
            kafka[rest] = value
    lines = []
    for view, values in sorted(found.items()):
        parts = [f"rows {int(values.get('rows', 0))}"]
        if "lag_seconds" in values:
            parts.append(f"lag {int(values['lag_seconds'])} s")
        if "live_keys" in values:
            parts.append(f"live keys {int(values['live_keys'])}")
        lines.append(f"  view {view}: {', '.join(parts)}")
    lines.append(
        "  dead letters: "
        + (", ".join(f"{r} {int(n)}" for r, n in dead.items()) if dead else "none")
    )
    if kafka:
        behind = (
            f"{p} {'-' if n is None else int(n)}"
            for p, n in sorted(kafka.items(), key=_partition_order)
        )
        lines.append("  kafka offsets behind: " + ", ".join(behind))
    return "\n".join(lines)


def _partition_order(item: tuple[str, Any]) -> tuple[str, int]:
    """``topic/partition`` in numeric order of the partition (2 before 10)."""
    topic, _, partition = item[0].rpartition("/")
    return (topic, int(partition)) if partition.isdigit() else (item[0], -1)


def wait_for(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()
