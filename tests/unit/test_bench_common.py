"""bench/common.py's shared helpers, which the gateway, transfer and
erasure-swarm benches use instead of their own copies."""

from __future__ import annotations

import pytest

from bench.common import make_log, parse_size, wait_for


@pytest.mark.parametrize("text,size", [("4096", 4096), ("1K", 1024), ("1.5M", 3 << 19), ("2GiB", 2 << 30),
                                       ("512kb", 512 << 10), (" 3m ", 3 << 20)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_make_log_writes_a_named_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    make_log("gateway")("started")
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("[gateway ") and err.endswith("] started\n")


def test_wait_for_returns_the_value_or_says_why_it_timed_out() -> None:
    seen = iter([0, None, "ready"])
    assert wait_for(lambda: next(seen), 5, "the thing", interval=0) == "ready"
    with pytest.raises(TimeoutError, match=r"waiting for nothing:\nnode log tail"):
        wait_for(lambda: None, 0, "nothing", interval=0, details=lambda: "node log tail")
    with pytest.raises(TimeoutError, match=r"waiting for nothing$"):
        wait_for(lambda: None, 0, "nothing", interval=0)
