"""bench/jobs.py --quick on real agents: its three parts run and print their tables (no figure checked:
the benchmark measures, it never asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_jobs_benchmark_prints_a_table_per_part(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "jobs.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    logs = "\n".join(
        f"--- {log.relative_to(tmp_path)}\n{log.read_text()[-2000:]}"
        for log in sorted(tmp_path.rglob("*.log"))
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\n{logs}"
    out = done.stdout
    for heading in ("## A. Submit to 202 against predict", "## B. Jobs per second", "## C. Takeover"):
        assert heading in out, out
    assert "| `POST /v1/jobs/echo` to 202 (3 copies stored) | " in out, out
    assert "Target: the 202 within 5 ms at p50 on loopback: " in out, out
    # Every job of part B (40) and of the kill in part C (8) ended completed; each table has its row.
    assert "| 1 | " in out.split("## B.")[1] and "completed 40 |" in out, out
    assert "| 1 | n1 | " in out.split("## C.")[1] and "completed 8 |" in out, out
    assert "Target: takeover within detection + 1 s." in out, out
