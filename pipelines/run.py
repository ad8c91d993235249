"""Run views end to end: load, bind sources, build the pipeline, run it, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from liveagg.errors import ViewError
from liveagg.loader import load_views
from liveagg.pipelines.compile import bind_sources, build, write_local_output
from liveagg.transforms.deadletter import NAMESPACE
from liveagg.transforms.sources import FileSource


@dataclass
class RunConfig:
    views: Sequence[str]
    inputs: Sequence[str] = ()
    output: str | None = None
    runner: str = "direct"
    streaming: bool = False
    direct_num_workers: int = 1
    beam_args: Sequence[str] = ()


@dataclass
class RunReport:
    """Counters read back from the finished pipeline."""

    output: str | None
    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        for view, count in sorted(self.rows.items()):
            where = f" -> {Path(self.output, view)}/" if self.output else ""
            lines.append(f"view {view}: {count} rows{where}")
        total = sum(self.dead_letters.values())
        where = f" -> {Path(self.output, '_dead_letter')}/" if self.output and total else ""
        lines.append(f"dead letters: {total}{where}")
        for reason, count in sorted(self.dead_letters.items()):
            lines.append(f"  {reason}: {count}")
        return "\n".join(lines)


def _parse_inputs(inputs: Sequence[str]) -> tuple[dict[str, FileSource], FileSource | None]:
    named: dict[str, FileSource] = {}
    default = None
    for item in inputs:
        name, sep, pattern = item.partition("=")
        if sep and name.isidentifier():
            named[name] = FileSource(pattern)
        else:
            default = FileSource(item)
    return named, default


def pipeline_options(config: RunConfig) -> PipelineOptions:
    args = list(config.beam_args)
    if config.runner == "direct":
        args += [
            "--runner=DirectRunner",
            f"--direct_num_workers={config.direct_num_workers}",
            "--direct_running_mode=in_memory"
            if config.direct_num_workers == 1
            else "--direct_running_mode=multi_processing",
        ]
    return PipelineOptions(args)


def run(config: RunConfig) -> RunReport:
    views = load_views(config.views)
    named, default = _parse_inputs(config.inputs)
    if not named and default is None:
        raise ViewError("<command line>", "$", "no input: give --input FILE_OR_GLOB")
    sources = bind_sources(views, named, default)
    pipeline = beam.Pipeline(options=pipeline_options(config))
    compiled = build(pipeline, views, sources, streaming=config.streaming or None)
    if config.output:
        write_local_output(compiled, views, config.output)
    result = pipeline.run()
    result.wait_until_finish()
    return _report(result, config.output, [v.name for v in views])


def _report(
    result: beam.runners.runner.PipelineResult, output: str | None, names: list[str]
) -> RunReport:
    report = RunReport(output, rows=dict.fromkeys(names, 0))
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    for counter in counters:
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        if name.startswith("rows/"):
            report.rows[name[5:]] = report.rows.get(name[5:], 0) + value
        elif name.startswith("dead_letter/") and name.count("/") == 1:
            reason = name.split("/", 1)[1]
            report.dead_letters[reason] = report.dead_letters.get(reason, 0) + value
    return report
