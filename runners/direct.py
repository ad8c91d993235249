"""The direct profile: Beam's local Python runner, for development, tests and the demo."""

from __future__ import annotations

import logging
import shlex
import sys
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner


class PythonDirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner on its Python engines, never on Prism.

    Beam 2.77's ``SwitchingDirectRunner.run_pipeline`` first hands a pipeline to
    ``prism_runner.PrismRunner()`` whenever ``_PrismRunnerSupportVisitor().accept(pipeline,
    self._is_interactive)`` finds nothing Prism mishandles, and that runner downloads Prism's
    binary from GitHub; only when that fails does it fall back to the FnApiRunner (or the
    BundleBasedDirectRunner). So ``--runner direct`` ran on Prism where GitHub is reachable,
    without what ``--runner prism`` sets up for it (the window operator would keep one
    watermark floor for all keys, which Prism's timers do not support), and elsewhere paid
    about 0.2 CPU-s a run to translate the pipeline and fail the download. The visitor's
    ``accept`` refuses Prism when ``is_interactive`` is true (``elif is_in_ipython() or
    is_interactive: self.supported_by_prism_runner = False``), and that is the only use
    ``direct_runner.py`` makes of ``_is_interactive``: setting it keeps the rest of the
    switch (the FnApiRunner unless a transform needs the BundleBasedDirectRunner) as it is.
    ``--runner prism`` is the way to Prism.

    With several worker processes (``multi_processing``) it runs the FnApiRunner directly,
    made as ``SwitchingDirectRunner`` makes it, whose workers log as liveagg does
    (:func:`_liveagg_workers`). A bounded liveagg pipeline is one the FnApiRunner runs.
    """

    _is_interactive = True

    def run_pipeline(self, pipeline: Any, options: Any) -> Any:
        if options.view_as(DirectOptions).direct_running_mode != "multi_processing":
            return super().run_pipeline(pipeline, options)
        return _liveagg_workers(options).run_pipeline(pipeline, options)


def _liveagg_workers(options: Any) -> Any:
    """The FnApiRunner with :mod:`liveagg.runners.direct_worker` as its worker command.

    Beam 2.77's ``FnApiRunner.run_pipeline`` starts each worker as ``'%s -m
    apache_beam.runners.worker.sdk_worker_main' % sys.executable``, whose import of Beam
    installs a root handler (the ``apitools`` warning, see :mod:`liveagg.logs`) that printed
    some 40 lines of Beam's INFO records to stderr per run. The environment's command is
    replaced in the pipeline proto that ``run_pipeline`` hands to ``run_via_runner_api``.
    Beam's FnApiRunner is imported here, by the runs that use it: at the top of this module
    it added about 45 ms to the start of every run, on Prism and Flink too.
    """
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    beams = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main".encode()

    class LiveaggWorkers(fn_runner.FnApiRunner):
        def run_via_runner_api(self, pipeline_proto: Any, options: Any) -> Any:
            command = [sys.executable, "-m", "liveagg.runners.direct_worker"]
            if logging.getLogger().isEnabledFor(logging.INFO):  # -v
                command.append("--verbose")
            for environment in pipeline_proto.components.environments.values():
                if environment.urn == python_urns.SUBPROCESS_SDK and environment.payload == beams:
                    environment.payload = shlex.join(command).encode()
            return super().run_via_runner_api(pipeline_proto, options)

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return LiveaggWorkers(provision_info=provision)


def beam_args(num_workers: int = 1) -> list[str]:
    """PipelineOptions arguments for the DirectRunner with ``num_workers`` workers.

    One worker runs in this process (fastest start, and tests can inject clocks); more use
    the multi-process mode, each a Python process.
    """
    mode = "in_memory" if num_workers == 1 else "multi_processing"
    return [
        f"--runner={PythonDirectRunner.__module__}.{PythonDirectRunner.__qualname__}",
        f"--direct_num_workers={num_workers}",
        f"--direct_running_mode={mode}",
    ]
