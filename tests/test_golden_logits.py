"""The engine's logits are bitwise those of the golden table (tests/golden_logits.py): code moves
in the forward pass must not change its math. One child process per ISA this CPU runs."""

from __future__ import annotations

import json

import golden_logits
import pytest

TABLE = json.loads(golden_logits.TABLE.read_text())


@pytest.mark.parametrize("isa", golden_logits.ISAS)
def test_logits_match_golden_table(isa):
    if isa not in golden_logits.available_isas():
        pytest.skip(f"this CPU does not run {isa}")
    if isa not in TABLE:
        pytest.skip(f"no golden digests recorded for {isa} (recorded on a CPU without it)")
    got = golden_logits.run_isa(isa)
    want = TABLE[isa]
    assert set(got) == set(want), "the golden cases changed: rerun tests/golden_logits.py --update on purpose"
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, f"{isa}: logits changed for {changed}"
