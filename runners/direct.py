"""The direct profile: Beam's local Python runner, for development, tests and the demo."""

from __future__ import annotations

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
    """

    _is_interactive = True


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
