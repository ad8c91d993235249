"""Messages held in their file's buffer (:class:`liveagg.engine.lines.Lines`)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveagg.engine.lines import Lines, joined
from liveagg.transforms.sources.files import LineBatch

objects = st.lists(
    st.builds(
        lambda n, pad: b'{"n": ' + str(n).encode() + b', "p": "' + b"x" * pad + b'"}',
        st.integers(-5, 10**6),
        st.integers(0, 40),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(objects, st.data())
def test_lines_are_the_split_buffer_and_slices_join_to_their_part(
    lines: list[bytes], data: st.DataObject
) -> None:
    buffer = b"\n".join(lines)
    held = Lines.of(buffer, len(lines))
    assert held is not None
    assert list(held) == lines
    assert [held[i] for i in range(len(lines))] == lines
    assert held.joined() is buffer  # the reader takes the buffer itself
    start = data.draw(st.integers(0, len(lines)))
    stop = data.draw(st.integers(start, len(lines)))
    part = held[start:stop]
    assert list(part) == lines[start:stop]
    assert joined(part) == b"\n".join(lines[start:stop])
    if stop > start:
        starts, lengths = part.bounds()
        whole = joined(part)
        assert [whole[s : s + n] for s, n in zip(starts, lengths, strict=True)] == lines[start:stop]
    assert list(held[::2]) == lines[::2]


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a": 1}', b""],  # a blank line
        [b'{"a": 1}', b' {"a": 2}'],  # padded
        [b'{"a": 1}\r', b'{"a": 2}'],  # a carriage return before the newline
        [b"[1]"],
        [b"{"],
        [b"}"],
        [b'{"a": 1}', b"not json"],
    ],
)
def test_a_batch_with_a_line_that_is_not_an_object_is_split(lines: list[bytes]) -> None:
    """Such batches are split into lines and stripped, as every batch was before."""
    assert Lines.of(b"\n".join(lines), len(lines)) is None
    batch = LineBatch("f", 0, 0, b"\n".join(lines), len(lines))
    assert batch.payloads() == lines


def test_a_line_batch_pickles_without_its_split_lines() -> None:
    batch = LineBatch("f", 0, 3, b'{"a": 1}\n{"a": 2}\r', 2, crlf=True)
    assert batch.lines == [b'{"a": 1}', b'{"a": 2}']
    copy = pickle.loads(pickle.dumps(batch))
    assert "lines" not in copy.__dict__
    assert copy == batch and copy.lines == batch.lines
