"""A run interrupted half way through judging (Ctrl-C on a real `prefdata run` process)
resumes: the re-run skips the finished stages and sends only the judge calls that were not
answered before the interruption; the rest come from RUN_DIR/calls.sqlite."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from prefdata.pipeline import load_pipeline, run_pipeline
from tests.pipeline.conftest import Writer

PREFDATA = Path(sys.executable).with_name("prefdata")


def stored_calls(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT count(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


@pytest.mark.slow
def test_interrupted_judge_resumes_from_the_call_cache(
    write_pipeline: Writer, gsm8k_questions: dict[str, Any], tmp_path: Path
) -> None:
    questions = {**gsm8k_questions, "limit": 3}
    path = write_pipeline(
        [
            questions,
            {"kind": "generate", "n": 3, "max_new_tokens": 10, "temperature": 1.0, "seed": 3},
            # One pair per chunk: the cache is written after every pair's two votes.
            {"kind": "judge", "judges": ["local:smollm2"], "chunk_size": 1, "batch_size": 2},
        ]
    )
    run_dir = tmp_path / "run"
    db = run_dir / "calls.sqlite"
    proc = subprocess.Popen(
        [str(PREFDATA), "run", str(path), "-o", str(run_dir), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    generated = 9  # 3 prompts x 3 samples
    deadline = time.monotonic() + 240
    try:
        # Interrupt once the first judge chunk is in the cache and the judge is still busy.
        while stored_calls(db) < generated + 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "judging never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted during stage 3 'judge'" in err and "Run the same command again" in err
    assert (run_dir / "generate" / "manifest.json").exists()
    assert not (run_dir / "judge" / "manifest.json").exists()
    judged_before = stored_calls(db) - generated
    assert judged_before >= 2

    result = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert result.ran == ["judge"]
    assert result.stage("generate").status == "skipped"
    judge = result.stage("judge")
    total = 2 * judge.report["pairs"]
    assert judged_before < total, "the judge finished before the interruption"
    assert judge.calls_cached == judged_before
    assert judge.calls_new == total - judged_before
    assert stored_calls(db) == generated + total
