"""A JS peer script (tests/interop/*.mjs) run as a child process, spoken to in
line-delimited JSON: one event object a line on stdout, commands on stdin.

Why shared: every interop test drove its script the same way (read a line,
check its "event", show the script's stderr when it did not come) and had to
tear it down the same way even on failure (kill, reap, close the pipes).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

HERE = Path(__file__).parent


class JsProcess:
    """A running script and its events."""

    def __init__(self, proc: trio.Process, stderr_path: Path, script: str) -> None:
        self.proc = proc
        self.script = script
        self._stderr_path = stderr_path
        self._buf = bytearray()

    def stderr(self) -> str:
        """The end of the script's stderr (for assertion messages)."""
        return self._stderr_path.read_text(errors="replace")[-4000:]

    async def next_event(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            data = await self.proc.stdout.receive_some()
            if not data:
                raise AssertionError(f"{self.script} ended without a report:\n{self.stderr()}")
            self._buf += data
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        event: dict[str, Any] = json.loads(line)
        return event

    async def expect(self, name: str) -> dict[str, Any]:
        """The next event, which must be `name`."""
        try:
            event = await self.next_event()
        except AssertionError as exc:
            raise AssertionError(f"wanted {name!r}: {exc}") from None
        assert event["event"] == name, f"wanted {name!r}, got {event}\n{self.stderr()}"
        return event

    async def call(self, answer: str, **command: str) -> dict[str, Any]:
        """Send one command line; the next event must be `answer`."""
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(command).encode() + b"\n")
        return await self.expect(answer)

    async def exit_code(self) -> int:
        return await self.proc.wait()


J = TypeVar("J", bound=JsProcess)


@asynccontextmanager
async def run_js(node: str | Path, script: str, args: Sequence[str], stderr_path: Path, kind: type[J],
                 *, stdin: bool = False, env: Mapping[str, str] | None = None,
                 grace_s: float = 0.0) -> AsyncIterator[J]:
    """Run `node script args...` in tests/interop; always reaped on the way out.

    `grace_s`: how long a script that ends by itself may take before it is
    killed (0: killed at once). `stdin`: a pipe for `call`, else /dev/null.
    """
    with open(stderr_path, "wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [str(node), script, *args], cwd=HERE, stdout=subprocess.PIPE, stderr=stderr,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
        )
    try:
        yield kind(proc, stderr_path, script)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None and grace_s > 0:
                with trio.move_on_after(grace_s):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()
