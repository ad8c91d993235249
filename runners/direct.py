"""The direct profile: Beam's local Python runner, for development, tests and the demo."""

from __future__ import annotations


def beam_args(num_workers: int = 1) -> list[str]:
    """PipelineOptions arguments for the DirectRunner with ``num_workers`` workers.

    One worker runs in this process (fastest start, and tests can inject clocks); more use
    the multi-process mode, each a Python process.
    """
    mode = "in_memory" if num_workers == 1 else "multi_processing"
    return [
        "--runner=DirectRunner",
        f"--direct_num_workers={num_workers}",
        f"--direct_running_mode={mode}",
    ]
