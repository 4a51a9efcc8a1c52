"""bench/common.py's shared helpers, which the gateway, transfer and
erasure-swarm benches use instead of their own copies."""

from __future__ import annotations

import pytest

from bench import common
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


def test_wait_quiet_waits_while_busy_and_not_at_all_when_told_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([0.9, 0.8, 0.1])
    monkeypatch.setattr(common, "system_load", lambda sample_s=1.0: {"cpu_busy_fraction_while_idle": next(loads)})
    monkeypatch.setattr(common.time, "sleep", lambda s: None)
    lines: list[str] = []
    common.wait_quiet(0, lines.append)
    assert lines == [] and next(loads) == 0.9  # zero: not even sampled
    common.wait_quiet(60, lines.append)
    assert len(lines) == 1 and "0.8" in lines[0]  # 0.8 busy: waited once; 0.1: done
