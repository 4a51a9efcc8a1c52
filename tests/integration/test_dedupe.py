"""Dedupe of a fine-tune after its base, in bytes actually written to an on-disk repo.

Same procedure as bench/dedupe.py on a smaller synthetic model (~7 MB,
62 tensors): 10 % of tensors changed, one inserted before all others (every
offset shifts), metadata changed. The safetensors chunker must store at most
1.05x the truly new bytes (changed + inserted tensors + header); the fixed
chunker, as a control that shows the setup really shifts offsets, must not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dedupe import make_models, measure

pytestmark = pytest.mark.integration


def test_safetensors_chunker_stores_only_what_changed(tmp_path: Path) -> None:
    models = make_models(tmp_path, layers=10, hidden=160)
    assert models["tensors"] == 62 and len(models["changed"]) == 6
    st = measure(models, "safetensors", tmp_path)
    fixed = measure(models, "fixed", tmp_path)
    truly_new = models["truly_new_bytes"]
    assert truly_new <= st["finetune_new_bytes"] <= 1.05 * truly_new, (st, truly_new)
    assert fixed["finetune_new_bytes"] > 0.9 * models["finetune_bytes"], fixed
