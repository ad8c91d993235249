"""``liveagg run`` as a user meets it: options, input and output problems, interrupts, the
``_SUCCESS`` marker and the summary. Every case runs the real command in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.generate import write as generate_events
from liveagg.pipelines.run import RunReport
from tests.support.cli import ROOT, command, liveagg, rows_in
from tests.support.waiting import eventually

VIEW = {
    "name": "totals",
    "event_time": {"field": "ts"},
    "grouping_cols": ["k"],
    "window": {"size": "1m"},
    "aggregation_info": [{"aggregation": "count", "aggregated_col_name": "n"}],
}
GOOD = [
    '{"k": "a", "ts": "2024-01-01T00:00:10Z"}',
    '{"k": "a", "ts": "2024-01-01T00:00:50Z"}',
    '{"k": "b", "ts": "2024-01-01T00:01:10Z"}',
]
BAD = ["not json", '{"k": "b"}']
BENCH_VIEWS = ROOT / "benchmarks" / "views"


@pytest.fixture
def view(tmp_path: Path) -> Path:
    path = tmp_path / "v.json"
    path.write_text(json.dumps(VIEW))
    return path


def lines_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def without_permission_override() -> tuple[str, ...]:
    """A prefix under which file permissions apply: root ignores them unless it drops the
    capabilities that override them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions do not apply")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["run", "rekey"])
def test_an_unknown_option_is_an_error_that_names_it(view: Path, subcommand: str) -> None:
    where = ("--input", str(view)) if subcommand == "run" else ("--intermediate-topic", "t")
    result = liveagg(subcommand, "--views", str(view), *where, "--ouput", "o", ok=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"liveagg {subcommand}: error: unrecognized arguments: --ouput o (did you mean --output?)"
    )
    assert result.stdout == ""


def test_a_beam_option_with_a_value_beam_refuses(view: Path) -> None:
    result = liveagg(
        "run", "--views", str(view), "--input", str(view), "--max_bundle_size=many", ok=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "liveagg run: error: argument --max_bundle_size: invalid int value: 'many'"
    )


def test_a_run_with_no_output_is_refused(view: Path, tmp_path: Path) -> None:
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    result = liveagg("run", "--views", str(view), "--input", str(data), ok=False)
    assert result.returncode == 2
    assert result.stderr == (
        "liveagg run: error: no output for view totals: give --output DIR, --sink JSON, or a "
        "'sinks' entry in the view\n"
    )


def test_a_run_whose_dead_letters_would_go_nowhere_is_refused(tmp_path: Path) -> None:
    """Rows to a view's own sink and no --output: its dead letters need a place too (SPEC
    section 2: bad input is never silently lost)."""
    view = tmp_path / "v.json"
    sink = {"type": "file", "path": str(tmp_path / "rows"), "format": "csv"}
    view.write_text(json.dumps({**VIEW, "sinks": [sink]}))
    data = lines_file(tmp_path / "in.jsonl", [*GOOD, "not json"])
    result = liveagg("run", "--views", str(view), "--input", str(data), ok=False)
    assert result.returncode == 2
    assert result.stderr == (
        "liveagg run: error: no output for dead letters: give --output DIR (they go to "
        "DIR/_dead_letter/) or --dead-letter-topic TOPIC\n"
    )
    assert not (tmp_path / "rows").exists()


@pytest.mark.parametrize(
    ("inputs", "why"),
    [
        (["IN", "other=IN"], "no view reads source 'other' (the views read: events)"),
        (["events=IN", "IN"], "every view's source is bound by name (events)"),
    ],
    ids=["a name no view reads", "an unnamed input beside the views' name"],
)
def test_an_input_nothing_reads_is_refused(
    view: Path, tmp_path: Path, inputs: list[str], why: str
) -> None:
    """As an unknown option is: never a run that silently ignores what it was given."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    given = [item.replace("IN", str(data)) for item in inputs]
    args = [a for item in given for a in ("--input", item)]
    out = tmp_path / "out"
    result = liveagg("run", "--views", str(view), *args, "--output", str(out), ok=False)
    assert result.returncode == 2
    assert (
        result.stderr == f"liveagg run: error: --input {given[-1]}: nothing would read it: {why}\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "given", "example"),
    [
        ("--input", "", "--input events=in/*.jsonl"),
        ("--input", "events=", "--input events=in/*.jsonl"),
        ("--kafka-topic", "events=", "--kafka-topic events=clicks"),
    ],
)
def test_an_empty_input_or_topic_is_refused(
    view: Path, tmp_path: Path, option: str, given: str, example: str
) -> None:
    """``--input ""`` read the working folder and said it is a folder."""
    out = tmp_path / "out"
    extra = ["--kafka-bootstrap", "127.0.0.1:1"] if option == "--kafka-topic" else []
    args = ["run", "--views", str(view), option, given, *extra, "--output", str(out)]
    result = liveagg(*args, ok=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"liveagg run: error: {option} {given!r}: give a "
        f"{'topic' if option == '--kafka-topic' else 'file or glob'}, e.g. {example}\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("bound", ["", "events="])
def test_two_inputs_for_one_source_are_refused(view: Path, tmp_path: Path, bound: str) -> None:
    """The second replaced the first, which was never read, and the run exited 0."""
    first = lines_file(tmp_path / "a.jsonl", GOOD)
    second = lines_file(tmp_path / "b.jsonl", GOOD)
    out = tmp_path / "out"
    inputs = ["--input", f"{bound}{first}", "--input", f"{bound}{second}"]
    result = liveagg("run", "--views", str(view), *inputs, "--output", str(out), ok=False)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"liveagg run: error: --input {bound}{second}: --input {bound}{first} already feeds "
    )
    assert not out.exists()


def test_a_file_where_a_view_folder_goes_is_found_before_anything_is_computed(
    view: Path, tmp_path: Path
) -> None:
    """It was found when the first row was written, naming that file, not the folder."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / VIEW["name"]).write_text("")
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out), ok=False
    )
    assert result.returncode == 1
    assert result.stderr == f"{out / VIEW['name']}: is not a folder; give a folder for the output\n"


def test_a_pipe_is_refused_as_input(view: Path, tmp_path: Path) -> None:
    """A pipe has no size: no range was read, and the run wrote 0 rows and _SUCCESS."""
    out = tmp_path / "out"
    result = subprocess.run(
        command("run", "--views", str(view), "--input", "/dev/stdin", "--output", str(out)),
        cwd=ROOT,
        input="".join(f"{line}\n" for line in GOOD).encode(),
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("/dev/stdin: is not a regular file (a pipe")
    assert not (out / "_SUCCESS").exists()


def test_a_command_line_sink_is_checked_as_a_view_files_sink(view: Path, tmp_path: Path) -> None:
    """Before anything runs: the error names the command line and the option's place."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    sinks = ('{"type": "file", "path": "o"}', '{"type": "file", "path": "o", "format": "xml"}')
    result = liveagg(
        "run",
        "--views",
        str(view),
        "--input",
        str(data),
        "--sink",
        sinks[0],
        "--sink",
        sinks[1],
        ok=False,
    )
    assert result.returncode == 2  # a bad command line (an error in a view file: 1)
    assert result.stderr.startswith("<command line>: $.sink[1].format: 'xml'"), result.stderr
    assert not (tmp_path / "o").exists()


# --- input ---------------------------------------------------------------------------------


def test_a_truncated_gzip_fails_the_run_and_names_the_file(view: Path, tmp_path: Path) -> None:
    """One whole gzip member and 30 bytes of a second: Beam's reader takes it as complete."""
    first = gzip.compress("".join(f"{line}\n" for line in GOOD[:2]).encode())
    second = gzip.compress(f"{GOOD[2]}\n".encode())
    data = tmp_path / "in.jsonl.gz"
    data.write_bytes(first + second[:30])
    out = tmp_path / "out"
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out), ok=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"{data}: truncated gzip data: the file ends inside a compressed stream, so its last "
        "lines are missing\n"
    )
    assert not (out / "_SUCCESS").exists()


def test_a_folder_as_input_is_refused(view: Path, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    lines_file(folder / "a.jsonl", GOOD)
    out = tmp_path / "out"
    result = liveagg(
        "run", "--views", str(view), "--input", str(folder), "--output", str(out), ok=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"{folder}: is a folder; give a file or a glob of its files, e.g. {folder}/*.jsonl\n"
    )


def test_an_unreadable_input_is_refused(view: Path, tmp_path: Path) -> None:
    prefix = without_permission_override()
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    data.chmod(0)
    tmp_path.chmod(0o755)  # the view stays readable
    out = tmp_path / "out"
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out),
        ok=False, prefix=prefix,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"{data}: cannot be read: Permission denied\n"


def test_an_input_that_matches_nothing(view: Path, tmp_path: Path) -> None:
    pattern = tmp_path / "missing-*.jsonl"
    out = tmp_path / "out"
    result = liveagg(
        "run", "--views", str(view), "--input", str(pattern), "--output", str(out), ok=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{pattern}: no file matches; give a JSON Lines file")
    assert result.stderr.count("\n") == 1


# --- output --------------------------------------------------------------------------------


def test_an_unwritable_output_fails_before_computing(view: Path, tmp_path: Path) -> None:
    """The error names the folder, as the check before the run does: a write of the run
    would name its file. (A FIFO as input, which a started run would wait on for ever, is
    itself refused now: it has no size to read by.)"""
    prefix = without_permission_override()
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    tmp_path.chmod(0o755)
    out = locked / "out"
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out),
        ok=False, prefix=prefix, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"{out}: cannot be written: Permission denied\n"


def test_an_output_that_is_a_file_is_refused(view: Path, tmp_path: Path) -> None:
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(data), ok=False
    )
    assert result.returncode == 1
    assert result.stderr == f"{data}: is not a folder; give a folder for the output\n"


@pytest.mark.parametrize("output", ["hdfs://nn/rows", "http://host/rows", "s3://", "gs:///x"])
def test_an_output_on_no_file_system_liveagg_writes_to_is_refused(
    view: Path, tmp_path: Path, output: str
) -> None:
    """It failed with Beam's traceback, or (S3 without a bucket) left a local folder 's3:'
    holding a write-check file in the working directory."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    result = subprocess.run(
        command("run", "--views", str(view), "--input", str(data), "--output", output),
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"{output}: is not a local folder, S3 or GCS path; expected a local folder ('out'), "
        "'s3://bucket/prefix' or 'gs://bucket/prefix'\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "v.json"]


def test_success_writes_success_last_and_prints_no_warning(view: Path, tmp_path: Path) -> None:
    data = lines_file(tmp_path / "in.jsonl", GOOD + BAD)
    out = tmp_path / "out"
    # A Beam option (DirectOptions) and one liveagg declares for Flink pass through.
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out),
        "--direct_runner_bundle_repeat=0", "--max_bundle_size=1000",
    )  # fmt: skip
    assert result.stderr == ""  # not a terminal: no progress line, and no third-party warning
    success = out / "_SUCCESS"
    assert success.read_bytes() == b""
    others = [p for p in files_under(out) if p != success]
    assert {p.relative_to(out).as_posix() for p in others} == {
        "totals/20240101T000000Z_20240101T000100Z.jsonl",
        "totals/20240101T000100Z_20240101T000200Z.jsonl",
        "_dead_letter/input.jsonl",
        "_dead_letter/totals.jsonl",
    }
    newest = max(p.stat().st_mtime_ns for p in others)
    assert success.stat().st_mtime_ns >= newest
    assert not any(p.name.startswith((".", "_")) for p in others)


def test_a_rerun_replaces_what_it_owns_and_nothing_else(view: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = lines_file(tmp_path / "first.jsonl", GOOD + BAD)
    liveagg("run", "--views", str(view), "--input", str(first), "--output", str(out))
    assert len(files_under(out / "_dead_letter")) == 2
    notes = out / "totals" / "notes.txt"  # not a file liveagg writes
    notes.write_text("mine")
    other = out / "other" / "keep.jsonl"  # not a folder this run writes
    other.parent.mkdir()
    other.write_text("{}\n")

    second = lines_file(tmp_path / "second.jsonl", GOOD[:2])  # minute 0 only, no bad line
    result = liveagg("run", "--views", str(view), "--input", str(second), "--output", str(out))
    assert "dead letters: 0\n" in result.stdout
    assert files_under(out / "_dead_letter") == []
    assert [p.name for p in files_under(out / "totals")] == [
        "20240101T000000Z_20240101T000100Z.jsonl",
        "notes.txt",
    ]
    assert [(r["k"], r["n"]) for r in rows_in(out / "totals")] == [("a", 2)]
    assert notes.read_text() == "mine"
    assert other.read_text() == "{}\n"
    assert (out / "_SUCCESS").exists()


def test_a_run_never_removes_its_own_input(view: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "totals").mkdir(parents=True)
    data = lines_file(out / "totals" / "in.jsonl", GOOD)
    result = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out), ok=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"{out / 'totals'}: holds input files of this run ({data}), and a run replaces the files "
        "in the folders it writes; give another --output or sink path\n"
    )
    assert data.read_text() == "".join(f"{line}\n" for line in GOOD)


def _can_mount_a_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{where}'"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_a_full_disk_is_one_line_and_leaves_no_success(tmp_path: Path) -> None:
    """A 64 KiB tmpfs in a private mount namespace (``unshare -rm``): the real disk is never
    filled, and the mount disappears with the process. The example run writes more."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_a_tmpfs(disk):
        pytest.skip("this machine cannot mount a tmpfs in a user and mount namespace")
    out = disk / "out"
    listing = tmp_path / "listing.txt"
    run = command(
        "run",
        "--views",
        str(ROOT / "view_schemas" / "examples"),
        "--input",
        str(ROOT / "examples" / "data" / "events.jsonl"),
        "--output",
        str(out),
    )
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$1" && shift 2 && "$@"; code=$?; '
        'find "$OUT" -type f | sort > "$LISTING"; exit $code'
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(disk), "--", *run],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OUT": str(out), "LISTING": str(listing)},
        timeout=600,
    )
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        rf"{re.escape(str(out))}/\S+\.jsonl: cannot be written: No space left on device\n",
        result.stderr,
    )
    written = listing.read_text().split()
    assert written, "nothing was written before the disk was full"
    assert f"{out}/_SUCCESS" not in written
    assert not [p for p in written if p.endswith(".inprogress")]


# --- interrupts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough events that a run computes for several seconds."""
    return generate_events(tmp_path_factory.mktemp("big") / "events.jsonl", 400_000)


def _read_until(fd: int, pattern: re.Pattern[bytes], timeout_s: float) -> bytes:
    """What a terminal shows until ``pattern`` appears (or the program ends)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while not pattern.search(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern.pattern!r} not shown: {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the program ended and closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"ended before {pattern.pattern!r}: {seen[-2000:]!r}")
            seen += chunk
    return seen


def _read_rest(fd: int) -> bytes:
    rest = b""
    while select.select([fd], [], [], 5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    return rest


def _screen(shown: bytes) -> list[str]:
    """The lines a terminal ends up showing for each line written: the progress line is
    rewritten in place (``\\r``, erase to the end of line)."""
    text = shown.decode().replace("\x1b[K", "")
    return [part.strip() for part in re.split(r"[\r\n]+", text) if part.strip()]


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_exits_130_with_one_line_and_no_success(
    big_input: Path, tmp_path: Path, workers: int
) -> None:
    """Ctrl-C, to the whole process group as a terminal sends it, once the run is computing:
    the progress line shows lines read (with worker processes, which read and count apart,
    once it has run two seconds). Two workers printed four to six tracebacks."""
    out = tmp_path / "out"
    terminal, stderr = pty.openpty()
    args = ["--input", str(big_input), "--output", str(out), "--direct-num-workers", str(workers)]
    proc = subprocess.Popen(
        command("run", "--views", str(BENCH_VIEWS), *args),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    os.close(stderr)
    busy = rb"reading: [1-9][0-9,]* lines" if workers == 1 else rb"running, [2-9] s"
    try:
        shown = _read_until(terminal, re.compile(busy), 600)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 130
        shown += _read_rest(terminal)
        eventually(lambda: _no_process_in_group(proc.pid), what="the workers gone", timeout_s=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(terminal)
    assert proc.stdout is not None and proc.stdout.read() == b""  # no summary
    lines = _screen(shown)
    assert lines[-1] == f"interrupted: output under {out} is partial (no _SUCCESS)"
    assert all(line.startswith(("running, ", "reading: ")) for line in lines[:-1]), lines
    assert not (out / "_SUCCESS").exists()
    assert not [p for p in files_under(out) if p.name.endswith(".inprogress")]


def _no_process_in_group(group: int) -> None:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"processes of group {group} still run")


def test_progress_on_a_terminal_ends_cleared(view: Path, tmp_path: Path) -> None:
    """A short run on a terminal: the summary alone stays on the screen."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out"
    terminal, stderr = pty.openpty()
    result = subprocess.run(
        command("run", "--views", str(view), "--input", str(data), "--output", str(out)),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        check=False,
        timeout=300,
    )
    os.close(stderr)
    shown = _read_rest(terminal)
    os.close(terminal)
    assert result.returncode == 0
    assert shown == b"" or shown.endswith(b"\r\x1b[K")  # nothing, or a cleared progress line


# --- the summary ---------------------------------------------------------------------------


def test_the_summary_adds_up_and_agrees_with_the_files(view: Path, tmp_path: Path) -> None:
    data = lines_file(tmp_path / "in.jsonl", GOOD + BAD)
    out = tmp_path / "out"
    summary = liveagg(
        "run", "--views", str(view), "--input", str(data), "--output", str(out)
    ).stdout
    rows = len(rows_in(out / "totals"))
    letters = sum(len(p.read_text().splitlines()) for p in files_under(out / "_dead_letter"))
    assert f"view totals: {rows} rows -> {out}/totals/\n" in summary
    assert f"dead letters: {letters} -> {out}/_dead_letter/\n" in summary


def test_the_summary_reconciles_from_its_own_lines(tmp_path: Path) -> None:
    """read = messages + blank + not messages, and per view messages = used + filtered out
    + dead letters, checked from the printed summary alone; the example data has a filter
    per view, blank-free lines and every kind of bad line."""
    out = tmp_path / "out"
    examples = ROOT / "view_schemas" / "examples"
    data = ROOT / "examples" / "data" / "events.jsonl"
    summary = liveagg("run", "--views", str(examples), "--input", str(data), "--output", str(out))
    text = summary.stdout.replace(",", "")
    read = re.search(r"^read (\d+) lines = (\d+) messages \+ (\d+) blank \+ (\d+) not ", text, re.M)
    assert read is not None, text
    lines, messages, blank, not_messages = map(int, read.groups())
    assert lines == len(data.read_bytes().splitlines()) == messages + blank + not_messages
    views = re.findall(
        r"^  (\d+) messages = (\d+) used \+ (\d+) filtered out \+ (\d+) dead letters$", text, re.M
    )
    assert len(views) == 5
    view_letters = 0
    for given, used, filtered, dead in (map(int, v) for v in views):
        assert given == messages == used + filtered + dead
        view_letters += dead
    total = int(re.search(r"^dead letters: (\d+)", text, re.M)[1])  # type: ignore[index]
    assert total == not_messages + view_letters
    written = sum(len(p.read_bytes().splitlines()) for p in files_under(out / "_dead_letter"))
    assert written == total


def test_summary_lines_add_up() -> None:
    report = RunReport(
        "out",
        rows={"cdn": 7, "ads": 3},
        dead_letters={"not_json": 2, "not_numeric": 1},
        lines_read=20,
        blank_lines=1,
        messages=17,
        used={"cdn": 10, "ads": 4},
        filtered={"cdn": 6, "ads": 13},
        message_dead_letters={"_input": {"not_json": 2}, "cdn": {"not_numeric": 1}},
    )
    assert report.summary().splitlines() == [
        "read 20 lines = 17 messages + 1 blank + 2 not messages (dead letters)",
        "view ads: 3 rows -> out/ads/",
        "  17 messages = 4 used + 13 filtered out + 0 dead letters",
        "view cdn: 7 rows -> out/cdn/",
        "  17 messages = 10 used + 6 filtered out + 1 dead letters",
        "dead letters: 3 -> out/_dead_letter/",
        "  not_json: 2",
        "  not_numeric: 1",
    ]


def test_summary_without_counters_claims_no_accounting() -> None:
    """A runner that gave no metrics (a cancelled portable job) counted nothing: no zeros
    that would read as 'nothing was read'."""
    report = RunReport("out", rows={"cdn": 0})
    assert report.summary().splitlines() == ["view cdn: 0 rows", "dead letters: 0"]


def test_summary_names_only_what_was_written_and_object_store_paths_whole() -> None:
    """No folder for a view without rows (none is written); ``s3://`` kept, not ``s3:/``."""
    report = RunReport(
        "s3://bucket/out",
        rows={"cdn": 2, "ads": 0},
        milestones={"cdn": 1, "ads": 0},
        dead_letters={"not_json": 1},
    )
    assert report.summary().splitlines() == [
        "view ads: 0 rows",
        "  0 milestones",
        "view cdn: 2 rows -> s3://bucket/out/cdn/",
        "  1 milestones -> s3://bucket/out/_milestones/cdn.jsonl",
        "dead letters: 1 -> s3://bucket/out/_dead_letter/",
        "  not_json: 1",
    ]


def test_a_closed_pipe_ends_the_run_quietly(view: Path, tmp_path: Path) -> None:
    """``liveagg run ... | head`` printed a BrokenPipeError traceback once the reader left."""
    data = lines_file(tmp_path / "in.jsonl", GOOD)
    args = ["run", "--views", str(view), "--input", str(data), "--output", str(tmp_path / "o")]
    read, write = os.pipe()
    os.close(read)  # the reader has gone before anything is written
    try:
        proc = subprocess.run(command(*args), stdout=write, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, b"")
