"""`cat` through a node reads under the store guard (issue 12 follow-up).

`cat` made its byte range local (cached, unpinned, when fetched from a
peer) and then streamed it with no guard: a `gc` meanwhile deleted the
blocks it was about to read, and the stream broke off. Now the stream
holds the guard shared, so the gc waits until the stream ends, and a
block a gc evicted between the fetch and the stream is fetched again.

Real processes: A holds a file, B fetches it from A for a `cat`; a slow
client keeps B's stream open while `shoal gc` runs on B.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tests.integration.swarm import Swarm, swarm  # noqa: F401  (fixture)

MIB = 1 << 20


def test_gc_waits_for_a_cat_stream_of_cached_blocks(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr])
    swarm.wait_connected(b, 1)
    src = tmp_path / "f.bin"
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() * (MIB // 32) for i in range(24))
    src.write_bytes(data)
    cid = a.put(src)
    own = tmp_path / "own.txt"
    own.write_bytes(b"B's own pinned object")
    b.put(own)  # so B's index holds a pin and gc runs without --force

    got = bytearray()
    stream = b.client().stream("/v1/cat", cid=cid)
    got += next(stream)  # B has fetched the range (unpinned) and started streaming
    gc = b.popen("gc")
    try:
        time.sleep(1.5)
        # The stream is still open, so gc must still be waiting for it.
        assert gc.poll() is None, "gc ran while a cat stream was reading the blocks it deletes"
        for chunk in stream:
            got += chunk
        _, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err.decode(errors="replace")
    finally:
        if gc.poll() is None:
            gc.kill()
            gc.communicate()
    assert bytes(got) == data
    # The gc did run once the stream ended: B's cached copy is gone, A's pinned one is not.
    assert b.block_count() < a.block_count()
