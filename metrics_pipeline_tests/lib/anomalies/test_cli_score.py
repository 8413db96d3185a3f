"""`metrics-pipeline anomalies score IN.csv --output OUT.csv`, end to end on a small CSV."""

import csv
import subprocess
import sys

import numpy as np

from metrics_pipeline import cli
from metrics_pipeline.lib.anomalies import csvio, detector


def _write(path, n=1500, spike_at=1400):
    rng = np.random.default_rng(0)
    values = 50 + 10 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 1, n)
    values[spike_at] += 40
    with open(path, "w") as fh:
        fh.write("timestamp,value\n")
        for i, v in enumerate(values):
            minutes = 5 * i
            fh.write(f"2024-03-{1 + minutes // 1440:02d} {minutes % 1440 // 60:02d}:{minutes % 60:02d}:00,{v:.3f}\n")
        fh.write("2024-03-06 05:00:00,not-a-number\n")
    return values


def test_the_command_writes_every_row_with_a_score_from_the_detector(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write(src)
    assert cli.main(["anomalies", "score", str(src), "--output", str(dst)]) == 0
    with open(src) as fh:
        rows_in = list(csv.reader(fh))
    with open(dst) as fh:
        rows_out = list(csv.reader(fh))
    assert rows_out[0] == ["timestamp", "value", "anomaly_score"]
    assert [r[:2] for r in rows_out[1:]] == rows_in[1:]  # timestamps and values as they were read
    scores = np.array([float(r[2]) for r in rows_out[1:]])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[1400] > 0.5 and (scores > 0.5).sum() <= 3  # the spike, and first-day surprises at most
    assert scores[-1] == 0.0  # the value that is not a number
    # The same numbers as the detector's own function (the asset's path).
    series = csvio.read_series(src)
    expected = detector.score_series(series.times, series.values, detector.DetectorConfig(step=300.0)).score
    assert np.array_equal(scores, expected)


def test_the_command_explains_and_reports_bad_input_in_one_line(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write(src)
    done = subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "anomalies", "score", str(src),
                           "--output", str(dst), "--explain"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "step 300 s" in done.stderr
    with open(dst) as fh:
        header = next(csv.reader(fh))
    assert header == ["timestamp", "value", "anomaly_score", "surprise", "expected", "lower", "upper"]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    done = subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "anomalies", "score", str(bad),
                           "--output", str(dst)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "timestamp and value" in done.stderr and "Traceback" not in done.stderr
