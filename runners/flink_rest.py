"""Watching and stopping a job through Flink's REST API (the API behind the web UI).

Beam's job service knows Beam's job id and state; the Flink job id, the liveagg metrics while
the job runs, and stop-with-savepoint are only in Flink's REST API. The standard library is
enough for the few calls made here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELED", "CANCELLED", "DONE", "STOPPED"})
_PREFIX = "liveagg_"  # Beam metric "liveagg/<name>" appears in Flink as "<operator>.liveagg_<name>"
GAUGES = ("lag_seconds/", "kafka_lag_offsets/")
"""Metrics that are values, not counts: their maximum over subtasks is reported, not the sum."""


class FlinkRestError(RuntimeError):
    """The cluster did not answer, or answered with an error."""


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
            raise FlinkRestError(f"{method} {self.url}{path}: {e.code} {e.read()[:500]!r}") from e
        except OSError as e:
            raise FlinkRestError(f"{method} {self.url}{path}: {e}") from e
        return json.loads(text) if text else None

    def ui(self, job_id: str) -> str:
        return f"{self.url}/#/job/running/{job_id}/overview"

    def find_job(self, name: str, timeout_s: float = 120.0) -> str:
        """The id of the newest job called ``name`` (Beam's ``--job_name``), waiting for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = [j for j in self._call("GET", "/jobs/overview")["jobs"] if j["name"] == name]
            if jobs:
                return max(jobs, key=lambda j: j["start-time"])["jid"]
            if time.monotonic() > deadline:
                raise FlinkRestError(f"no job named {name!r} on {self.url} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def state(self, job_id: str) -> str:
        return self._call("GET", f"/jobs/{job_id}")["state"]

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

    def latest_checkpoint(self, job_id: str) -> str | None:
        """Where the newest completed checkpoint of the job is, if any."""
        latest = self._call("GET", f"/jobs/{job_id}/checkpoints").get("latest") or {}
        return (latest.get("completed") or {}).get("external_path")

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


def initializing(error: str) -> bool:
    """Whether Flink refused an operation only because the job's JobManager is starting."""
    return "JobManager is initializing" in error


def format_metrics(metrics: dict[str, float]) -> str:
    """One line per kind: views (lag, live keys, rows), dead letters, Kafka lag."""
    views: dict[str, dict[str, float]] = {}
    dead: dict[str, float] = {}
    kafka: dict[str, float] = {}
    for name, value in sorted(metrics.items()):
        kind, _, rest = name.partition("/")
        if kind in ("lag_seconds", "live_keys", "rows"):
            views.setdefault(rest, {})[kind] = value
        elif kind == "dead_letter" and "/" not in rest:
            dead[rest] = value
        elif kind == "kafka_lag_offsets":
            kafka[rest] = value
    lines = []
    for view, values in sorted(views.items()):
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
        lines.append(
            "  kafka offsets behind: " + ", ".join(f"{p} {int(n)}" for p, n in kafka.items())
        )
    return "\n".join(lines)


def wait_for(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()
