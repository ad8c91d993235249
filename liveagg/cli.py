"""The ``liveagg`` command: ``validate`` view files, ``run`` them as one Beam pipeline, and
``rekey`` (level 2 of a two-level run)."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from liveagg import __version__
from liveagg.beamstart import import_beam
from liveagg.logs import configure_logging
from liveagg.runners import RUNNERS


def _validate(args: argparse.Namespace) -> int:
    from liveagg.loader import validate_paths

    errors = validate_paths(args.paths, checks=[_own_sinks])
    for error in errors:
        print(error)
    if not errors:
        print(f"ok: every view in {' '.join(args.paths)} is valid", file=sys.stderr)
    return 1 if errors else 0


def _own_sinks(views: list[Any]) -> list[Any]:
    """:func:`liveagg.pipelines.compile.check_own_sinks`, with Beam imported only for views
    that declare sinks."""
    if not any(view.sinks for view in views):
        return []
    import_beam()
    from liveagg.pipelines.compile import check_own_sinks

    return check_own_sinks(views)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from datetime import timedelta

    from liveagg.errors import COMMAND_LINE, PathError, ViewError, ViewErrors
    from liveagg.pipelines.run import Interrupted, KafkaInput, RunConfig, UsageError, run
    from liveagg.runners.flink import FlinkProfile, JobFailed
    from liveagg.runners.prism import PrismProfile
    from liveagg.runners.spark import SparkProfile
    from liveagg.settings import ConnectionFailed

    try:
        connections = _connections(args)
    except ValueError as error:  # a malformed LIVEAGG_* variable, a certificate without key
        print(f"liveagg {args.command}: error: {error}", file=sys.stderr)
        return 2
    flink = FlinkProfile()
    flink = replace(
        flink,
        master=args.flink_master or flink.master,
        version=args.flink_version or flink.version,
        parallelism=args.parallelism,
        checkpoint_interval=flink.checkpoint_interval
        if args.checkpoint_interval_s is None
        else timedelta(seconds=args.checkpoint_interval_s),
        environment=args.flink_environment,
        worker_pool=args.flink_worker_pool or flink.worker_pool,
        job_endpoint=args.flink_job_endpoint or flink.job_endpoint,
        job_server_jar=args.flink_job_server_jar or flink.job_server_jar,
        restore=args.flink_restore,
        savepoint_on_stop=args.savepoint_on_stop,
        savepoint_dir=args.savepoint_dir,
    )
    config = RunConfig(
        views=args.views,
        inputs=args.input or [],
        kafka=KafkaInput(
            topics=args.kafka_topic or [],
            group_id=args.kafka_group_id,
            start=args.kafka_start,
            unbounded=args.unbounded,
            max_records=args.max_records,
            idle_timeout=timedelta(seconds=args.idle_timeout_s),
        ),
        output=args.output,
        sinks=args.sink or [],
        view_sinks=not args.no_view_sinks,
        dead_letter_topic=args.dead_letter_topic,
        milestone_topic=args.milestone_topic,
        connections=connections,
        runner=args.runner,
        streaming=args.streaming,
        direct_num_workers=args.direct_num_workers,
        flink=flink,
        prism=PrismProfile(location=args.prism_location or PrismProfile().location),
        spark=_spark_profile(args, SparkProfile()),
        report_every_s=args.report_every_s,
        beam_args=args.beam_args,
        intermediate_topic=args.intermediate_topic,
        rekey=args.rekey,
        progress=sys.stderr.isatty(),
    )
    try:
        report = run(config)
    except ViewErrors as errors:
        for error in errors:
            print(error, file=sys.stderr)
        return 2 if all(e.file == COMMAND_LINE for e in errors) else 1
    except JobFailed as error:  # one line, with the --flink-restore to resume from
        print(error, file=sys.stderr)
        return error.exit_code
    except ViewError as error:  # of a view file, or of the command line (exit 2)
        print(error, file=sys.stderr)
        return 2 if error.file == COMMAND_LINE else 1
    except (ConnectionFailed, PathError) as error:
        print(error, file=sys.stderr)
        return 1
    except UsageError as error:
        print(f"liveagg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as interrupted:
        print(interrupted, file=sys.stderr)
        return 128 + interrupted.signum
    print(report.summary())
    return 0


def _spark_profile(args: argparse.Namespace, default: Any) -> Any:
    """``--spark-*`` over ``LIVEAGG_SPARK_*`` (``default``)."""
    from dataclasses import replace

    return replace(
        default,
        master=args.spark_master or default.master,
        job_endpoint=args.spark_job_endpoint or default.job_endpoint,
        job_server_jar=args.spark_job_server_jar or default.job_server_jar,
    )


def _connections(args: argparse.Namespace) -> Any:
    """The run's :class:`Connections`: each option over its environment variable."""
    from liveagg.settings import CassandraTls, Connections, kafka_settings

    defaults = Connections()
    env_tls = defaults.cassandra_tls
    files = {
        "ca_file": args.cassandra_ca_file,
        "cert_file": args.cassandra_cert_file,
        "key_file": args.cassandra_key_file,
    }
    tls = env_tls
    if args.cassandra_tls or any(files.values()) or args.cassandra_no_verify_hostname:
        base = env_tls or CassandraTls()
        tls = CassandraTls(
            ca_file=files["ca_file"] or base.ca_file,
            cert_file=files["cert_file"] or base.cert_file,
            key_file=files["key_file"] or base.key_file,
            verify_hostname=base.verify_hostname and not args.cassandra_no_verify_hostname,
        )
    return Connections(
        kafka_bootstrap=args.kafka_bootstrap or defaults.kafka_bootstrap,
        kafka_config={**defaults.kafka_config, **kafka_settings(args.kafka_config or [])},
        cassandra_hosts=tuple(args.cassandra_hosts.split(","))
        if args.cassandra_hosts
        else defaults.cassandra_hosts,
        cassandra_port=args.cassandra_port or defaults.cassandra_port,
        cassandra_local_dc=args.cassandra_local_dc or defaults.cassandra_local_dc,
        cassandra_username=args.cassandra_username or defaults.cassandra_username,
        cassandra_password=defaults.cassandra_password,
        cassandra_tls=tls,
        s3_endpoint=args.s3_endpoint or defaults.s3_endpoint,
        gcs_endpoint=args.gcs_endpoint or defaults.gcs_endpoint,
    )


def _kafka_setting(text: str) -> tuple[str, str]:
    from liveagg.settings import parse_kafka_setting

    try:
        return parse_kafka_setting(text)
    except ValueError as e:  # argparse would print the value, which may be a password
        raise argparse.ArgumentTypeError(str(e)) from None


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (a count of workers, records)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer of at least {minimum}, got {text!r}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more (``float`` takes nan, inf and
    negative numbers, which failed the run or were taken silently)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveagg",
        description="Real-time aggregation views on Apache Beam: validate JSON views, run "
        "them as one pipeline, and merge a two-level run's partial aggregates (rekey).",
    )
    parser.add_argument("--version", action="version", version=f"liveagg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's progress")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser(
        "validate",
        help="validate view files or folders",
        description="Validate view files (or folders of *.json) against the view schema and the "
        "semantic checks. Prints each error as 'FILE: $.json.path: message'; exit 0 when all "
        "are valid, 1 otherwise.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="view file or folder")
    validate.set_defaults(func=_validate)

    run = sub.add_parser(
        "run",
        help="compile views into one Beam pipeline and run it",
        usage="liveagg run --views PATH... [--input [SOURCE=]FILE_OR_GLOB | --kafka-topic "
        "[SOURCE=]TOPIC] [--output DIR] [options] [Beam pipeline options]",
        description="Compile the views into one Beam pipeline that reads each source once, "
        "and run it. With --input (JSON Lines) and --output DIR, rows are written as JSON "
        "Lines under DIR/<view>/ (one file per window), dead letters under "
        "DIR/_dead_letter/, and DIR/_SUCCESS last. Beam's pipeline options "
        "(--max_bundle_size=N, ...) are passed to Beam; an option that neither liveagg nor "
        "Beam declares is an error. Exit status: 0 done, 1 failed (views, input, output), "
        "2 bad command line, 130 interrupted.",
    )
    run.add_argument(
        "--views", nargs="+", required=True, metavar="PATH", help="view files or folders"
    )
    run.add_argument(
        "--input",
        action="append",
        metavar="[SOURCE=]FILE_OR_GLOB",
        help="JSON Lines input, one message per line: a file or a glob (not a folder or a "
        "pipe), local, s3:// or gs://; .gz, .bz2, .xz, .zst and .deflate files are "
        "decompressed. 'SOURCE=GLOB' binds a view source name; a bare GLOB serves every source "
        "not bound otherwise. Repeatable, once per source.",
    )
    run.add_argument(
        "--kafka-topic",
        action="append",
        metavar="[SOURCE=]TOPIC",
        help="read a Kafka topic (all partitions); 'SOURCE=TOPIC' binds a view source name. "
        "Bounded by default: up to the end offsets seen at start",
    )
    run.add_argument(
        "--intermediate-topic",
        metavar="TOPIC",
        help="level 1 of a two-level run: write each view's partial aggregates to TOPIC "
        "instead of rows to its sinks; 'liveagg rekey' merges them (docs/two-level.md)",
    )
    _add_run_options(run)
    run.set_defaults(func=_run, rekey=False, subparser=run)

    rekey = sub.add_parser(
        "rekey",
        help="level 2 of a two-level run: merge partial aggregates into rows",
        usage="liveagg rekey --views PATH... --intermediate-topic TOPIC [--output DIR] "
        "[options] [Beam pipeline options]",
        description="Read the partial aggregates that 'liveagg run --intermediate-topic' wrote, "
        "re-key them by each view's final grouping key and window (its roll-up, if it "
        "declares one), merge them and write rows to the sinks exactly as a one-level run. "
        "Partials of another definition of a view go to the dead letters, never merged. "
        "Beam's pipeline options are passed to Beam; an option that neither liveagg nor "
        "Beam declares is an error.",
    )
    rekey.add_argument(
        "--views",
        nargs="+",
        required=True,
        metavar="PATH",
        help="the view files or folders level 1 ran",
    )
    rekey.add_argument(
        "--intermediate-topic",
        required=True,
        metavar="TOPIC",
        help="the Kafka topic level 1 writes its partials to",
    )
    _add_run_options(rekey)
    rekey.set_defaults(func=_run, rekey=True, input=None, kafka_topic=None, subparser=rekey)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``rekey`` share: Kafka, sinks, connections and runners."""
    p.add_argument(  # also after the subcommand, where users put it; unset unless given
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log Beam's progress (as 'liveagg -v')",
    )
    p.add_argument(
        "--kafka-bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $LIVEAGG_KAFKA_BOOTSTRAP)",
    )
    p.add_argument(
        "--kafka-config",
        action="append",
        type=_kafka_setting,
        metavar="KEY=VALUE",
        help="a librdkafka setting for every Kafka client of the run (source, sinks, dead "
        "letters, intermediate topic), e.g. security.protocol=SASL_SSL. Repeatable; over "
        "$LIVEAGG_KAFKA_CONFIG_<KEY> (dots as underscores: LIVEAGG_KAFKA_CONFIG_SASL_PASSWORD), "
        "the place for passwords (docs/kafka.md)",
    )
    p.add_argument("--kafka-group-id", metavar="ID", help="consumer group (liveagg-<topic>)")
    p.add_argument(
        "--kafka-start",
        choices=["committed", "earliest", "latest"],
        default="committed",
        help="where to start: the group's committed offsets (else earliest), earliest, latest",
    )
    p.add_argument(
        "--unbounded",
        action="store_true",
        help="read Kafka for ever (streaming: early, on-time and late panes)",
    )
    p.add_argument(
        "--max-records", type=_at_least(0), metavar="N", help="stop after N Kafka records in all"
    )
    p.add_argument(
        "--idle-timeout-s",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="an idle Kafka partition stops holding the watermark back after this (default 10)",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        help="write rows under DIR/<view>/, dead letters under DIR/_dead_letter/ and milestone "
        "events under DIR/_milestones/ (local, s3:// or gs://)",
    )
    p.add_argument(
        "--sink",
        action="append",
        metavar="JSON",
        help='add a sink to every view, e.g. \'{"type": "cassandra", "keyspace": "stats"}\' '
        "(the table defaults to the view name). Repeatable",
    )
    p.add_argument(
        "--no-view-sinks", action="store_true", help="ignore the sinks written in the view files"
    )
    p.add_argument("--dead-letter-topic", metavar="TOPIC", help="also send dead letters here")
    p.add_argument(
        "--milestone-topic",
        metavar="TOPIC",
        help="also send the views' milestone events here, one JSON message each, keyed by "
        "milestone_id",
    )
    p.add_argument(
        "--cassandra-hosts",
        metavar="HOST[,...]",
        help="Cassandra contact points (default: $LIVEAGG_CASSANDRA_HOSTS or 127.0.0.1)",
    )
    p.add_argument(
        "--cassandra-port", type=int, help="CQL port (default: $LIVEAGG_CASSANDRA_PORT or 9042)"
    )
    p.add_argument("--cassandra-local-dc", metavar="DC", help="Cassandra local datacenter")
    p.add_argument(
        "--cassandra-username",
        metavar="USER",
        help="log in to Cassandra as USER (default: $LIVEAGG_CASSANDRA_USERNAME); the password "
        "only from $LIVEAGG_CASSANDRA_PASSWORD",
    )
    p.add_argument(
        "--cassandra-tls",
        action="store_true",
        help="connect to Cassandra with TLS (default: $LIVEAGG_CASSANDRA_TLS; implied by the "
        "file options below)",
    )
    p.add_argument(
        "--cassandra-ca-file",
        metavar="PEM",
        help="CA certificates that signed the nodes' certificates (default: "
        "$LIVEAGG_CASSANDRA_CA_FILE, else the system's)",
    )
    p.add_argument(
        "--cassandra-cert-file",
        metavar="PEM",
        help="client certificate, with --cassandra-key-file "
        "(default: $LIVEAGG_CASSANDRA_CERT_FILE)",
    )
    p.add_argument(
        "--cassandra-key-file",
        metavar="PEM",
        help="the client certificate's unencrypted private key (default: "
        "$LIVEAGG_CASSANDRA_KEY_FILE)",
    )
    p.add_argument(
        "--cassandra-no-verify-hostname",
        action="store_true",
        help="accept a node certificate that does not name the address it was reached at "
        "(still signed by the CA); default: verify ($LIVEAGG_CASSANDRA_TLS_VERIFY_HOSTNAME)",
    )
    p.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible endpoint (default: $LIVEAGG_S3_ENDPOINT; credentials from "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
    )
    p.add_argument(
        "--gcs-endpoint",
        metavar="URL",
        help="GCS endpoint, e.g. an emulator (default: $STORAGE_EMULATOR_HOST)",
    )
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        default="direct",
        help="Beam runner: direct (default: Beam's DirectRunner), prism (Beam's Go runner on "
        "this machine; runs unbounded Kafka reads with early panes), flink (Apache Flink "
        "through Beam's FlinkRunner) or spark (Apache Spark through Beam's SparkRunner, "
        "bounded input); see docs/runners.md",
    )
    p.add_argument(
        "--streaming",
        action="store_true",
        help="run bounded input through the streaming window operator (the same rows, but "
        "for sketch estimates (count_distinct, approx_quantiles), whose merge order differs; "
        "slower); by default bounded input uses the bounded path",
    )
    p.add_argument(
        "--direct-num-workers",
        type=_at_least(0),
        default=1,
        metavar="N",
        help="parallel workers for the direct runner (default: 1)",
    )
    prism = p.add_argument_group("Prism (--runner prism)")
    prism.add_argument(
        "--prism-location",
        metavar="PATH",
        help="the Prism binary to run (default: $LIVEAGG_PRISM_LOCATION, else Beam downloads "
        "the one of its version from GitHub); `python -m integration.services.prism` builds one",
    )
    spark = p.add_argument_group("Spark (--runner spark)")
    spark.add_argument(
        "--spark-master",
        metavar="URL",
        help="Spark master the job server runs the job on (default: $LIVEAGG_SPARK_MASTER, "
        "else local[2]: Spark inside the job server)",
    )
    spark.add_argument(
        "--spark-job-endpoint",
        metavar="HOST:PORT",
        help="a running Beam Spark job server (default: $LIVEAGG_SPARK_JOB_ENDPOINT; "
        "`python -m integration.services start spark` runs one)",
    )
    spark.add_argument(
        "--spark-job-server-jar",
        metavar="JAR",
        help="a Beam Spark job server jar that Beam starts for the run (default: "
        "$LIVEAGG_SPARK_JOB_SERVER_JAR)",
    )
    flink = p.add_argument_group("Flink (--runner flink)")
    flink.add_argument(
        "--flink-master",
        metavar="HOST:PORT",
        help="REST address of the Flink cluster, or [local] for an embedded Flink "
        "(default: $LIVEAGG_FLINK_MASTER or [local])",
    )
    flink.add_argument(
        "--flink-version",
        metavar="X.Y",
        help="Flink version of the cluster: 1.19, 1.20, 2.0, 2.1 or 2.2 "
        "(default: $LIVEAGG_FLINK_VERSION or 1.19)",
    )
    flink.add_argument("--parallelism", type=_at_least(1), metavar="N", help="job parallelism")
    flink.add_argument(
        "--checkpoint-interval-s",
        type=_seconds,
        metavar="SECONDS",
        help="checkpoint every this often when streaming (default 1; 0: off). Windows close at "
        "the first checkpoint after the watermark passes their end. Checkpoints are retained "
        "when the job fails or is cancelled, for --flink-restore",
    )
    flink.add_argument(
        "--flink-environment",
        choices=["loopback", "external"],
        help="where the Python workers run: loopback (in this process) or external (a Beam "
        "worker pool beside the TaskManagers; the default when --flink-worker-pool is set)",
    )
    flink.add_argument(
        "--flink-worker-pool",
        metavar="HOST:PORT",
        help="Beam Python worker pool for the external environment "
        "(default: $LIVEAGG_FLINK_WORKER_POOL)",
    )
    flink.add_argument(
        "--flink-job-endpoint",
        metavar="HOST:PORT",
        help="a running Beam Flink job server (default: $LIVEAGG_FLINK_JOB_ENDPOINT; otherwise "
        "one is started from --flink-job-server-jar)",
    )
    flink.add_argument(
        "--flink-job-server-jar",
        metavar="PATH",
        help="Beam's Flink job-server jar to start (default: $LIVEAGG_FLINK_JOB_SERVER_JAR, "
        "else Beam downloads the one for --flink-version from Maven Central)",
    )
    flink.add_argument(
        "--flink-restore",
        metavar="PATH",
        help="start from this savepoint or retained checkpoint; a folder of them (a job's "
        "checkpoint folder, say) means its newest complete one",
    )
    flink.add_argument(
        "--savepoint-on-stop",
        action="store_true",
        help="on Ctrl-C, stop the job with a savepoint (and print how to resume) instead of "
        "cancelling it",
    )
    flink.add_argument(
        "--savepoint-dir", metavar="DIR", help="where savepoints go (default: the cluster's)"
    )
    flink.add_argument(
        "--report-every-s",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="print the job's metrics this often while it runs (default 30; 0: never)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("run", "rekey"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)  # before anything imports Beam
    if args.command in ("run", "rekey"):
        import_beam()
    if extra:
        try:
            unknown = unknown_options(extra)
        except argparse.ArgumentError as e:  # a Beam option with a value Beam refuses
            args.subparser.error(str(e))
        if unknown:
            args.subparser.error(
                f"unrecognized arguments: {' '.join(unknown)}{_suggest(unknown, args.subparser)}"
            )
    args.beam_args = extra
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:  # before the run started writing (it reports its own)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # ``liveagg ... | head`` closed the pipe: nothing more to say
        # Python would report the pipe again when it flushes stdout at exit (its docs,
        # "Note on SIGPIPE"): point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe ended


def unknown_options(args: Sequence[str]) -> list[str]:
    """The arguments that no ``PipelineOptions`` class declares, as Beam parses them.

    Beam knows its options by the classes themselves: ``PipelineOptions.get_all_options``
    builds a ``_BeamArgumentParser(allow_abbrev=False)``, calls
    ``cls._add_argparse_args(parser)`` for every class in ``PipelineOptions.__subclasses__()``
    (then the ``add_extra_args_fn`` it is given) and parses with ``parse_known_args``; what
    is left over it only logs, "Discarding unparseable args"
    (``apache_beam/options/pipeline_options.py``). Handing it an ``add_extra_args_fn`` that
    keeps the parser gives that very parser, to find the leftovers with. Its errors raise
    ``argparse.ArgumentError`` (``--max_bundle_size=many``, say) instead of printing Beam's
    usage of every option.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    # A class is known once imported: liveagg's own (``FlinkJavaOptions``: Flink options that
    # Beam's Python SDK does not declare) come with the modules a run imports anyway.
    import liveagg.pipelines.run  # noqa: F401

    parsers: list[argparse.ArgumentParser] = []

    def keep(parser: argparse.ArgumentParser) -> None:
        parser.exit_on_error = False
        parsers.append(parser)

    PipelineOptions(list(args)).get_all_options(add_extra_args_fn=keep)
    _, unknown = parsers[0].parse_known_args(list(args))
    return list(unknown)


def _suggest(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """``(did you mean --output?)`` for the first unknown option close to a liveagg one."""
    known = [option for action in parser._actions for option in action.option_strings]
    for arg in unknown:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


if __name__ == "__main__":
    sys.exit(main())
