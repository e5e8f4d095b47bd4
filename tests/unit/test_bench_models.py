"""bench/models.py's pieces that need no agent: the percentile, the random model, the copy baseline."""

from __future__ import annotations

import math
from pathlib import Path

from .bench_scripts import load_bench

bench = load_bench("models")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile(values, 0.5) == 50.0
    assert math.isnan(bench.percentile([], 0.5))


def test_the_model_is_four_files_of_the_size_asked_and_the_copy_measures_a_rate(tmp_path: Path) -> None:
    source = bench.make_source(tmp_path, 2)
    files = sorted(source.iterdir())
    assert [path.name for path in files] == [f"weights-{i}.bin" for i in range(4)]
    assert sum(path.stat().st_size for path in files) == 2_000_000
    assert files[0].read_bytes() != files[1].read_bytes()  # random, not one pattern the disk could dedupe
    assert bench.copy_rate(source, tmp_path) > 0
    assert bench.verified_copy_rate(source, tmp_path) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # the copies are removed
