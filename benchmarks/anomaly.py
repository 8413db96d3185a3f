"""Anomaly detector on the Numenta Anomaly Benchmark (issue 20): NAB score per profile, and throughput.

    python benchmarks/anomaly.py [--data ../shared/data/nab] [--robustness] [--no-write]

Every file of NAB's `data/` folder goes through the `metrics-pipeline anomalies score` command's code
path (`csvio.read_series`, `csvio.score_file`: the same `detector.score` the asset calls), then NAB's rules
(`metrics_pipeline.lib.anomalies.nab`, written from the README of the data folder: probationary period,
scaled sigmoid, windows, false positives after windows, one corpus threshold swept over every distinct
score, normalisation) give the normalised score of each profile with its threshold. They are printed beside
the published scores of other detectors (full NAB corpus, standard profile; the folder holds 28 of its 58
files, so the comparison is indicative). Also checked in the run: a null detector scores 0 and a perfect
one 100 under every profile.

Throughput: CPU time of this process (one core, `time.process_time`) for scoring every file, the
detector alone and the command's whole path (read, score, write the CSV), as points per second.
Target: NAB standard >= 65 and >= 200,000 points/s.

`--robustness` (a few minutes) adds the checks of docs/anomalies.md: each parameter halved and doubled
(one at a time), and leave one category out: for each category, the variant and the threshold that score
best on the three others, applied to it, beside the best it could have had.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import ROOT, append_result, replace_section

from metrics_pipeline.lib.anomalies import csvio, detector, nab

PUBLISHED = [  # NAB scoreboard, full corpus, standard profile (as listed in the data folder's README)
    ("ARTime", 74.9), ("Numenta HTM", 70.1), ("contextOSE", 69.9), ("KNN-CAD", 58.0),
    ("random cut forest", 51.7), ("Twitter ADVec", 47.1), ("windowed Gaussian", 39.6),
    ("Etsy Skyline", 35.7), ("random", 16.8), ("null", 0.0),
]
TARGET_SCORE, TARGET_RATE = 65.0, 200_000
VARIED = ("spike_window", "level_window", "burst_window", "memory", "block", "min_history", "refractory", "margin",
          "seasonal_days")


def load(data_dir: Path):
    labels = json.loads((data_dir / "labels" / "combined_windows.json").read_text())
    files = sorted(p for p in (data_dir / "data").glob("*/*.csv"))
    return {f"{p.parent.name}/{p.name}": p for p in files}, labels


def score_all(files: dict[str, Path], overrides: dict | None = None):
    """Scores per file through the command's path; with overrides, through the same detector with other
    parameters (the robustness check)."""
    results, rows, t_score = {}, 0, 0.0
    for name, path in files.items():
        series = csvio.read_series(path)
        t0 = time.process_time()
        if overrides:
            config = replace(detector.DetectorConfig(step=csvio.infer_step(series.times)), **overrides)
            scores = detector.score_series(series.times, series.values, config)
        else:
            scores, _ = csvio.score_file(series)
        t_score += time.process_time() - t0
        results[name] = (series.stamps, scores.score)
        rows += len(series.stamps)
    return results, rows, t_score


def end_to_end_rate(files: dict[str, Path]) -> float:
    """Points per CPU second of the command's whole path: read, score, write."""
    rows, t0 = 0, time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in files.items():
            series = csvio.read_series(path)
            scores, _ = csvio.score_file(series)
            csvio.write_scores(Path(tmp) / "out.csv", series, scores)
            rows += len(series.stamps)
    return rows / (time.process_time() - t0)


def check_scorer(files: dict[str, Path], labels) -> None:
    """A null detector scores 0 and a perfect one (1 at each window's first row) 100, in every profile."""
    null, perfect = {}, {}
    for name, path in files.items():
        series = csvio.read_series(path)
        null[name] = (series.stamps, np.zeros(len(series.stamps)))
        hits = np.zeros(len(series.stamps))
        index = {s: i for i, s in reversed(list(enumerate(series.stamps)))}
        for start, _ in labels.get(name, []):
            hits[index[start[:19]]] = 1.0
        perfect[name] = (series.stamps, hits)
    for profile in nab.PROFILES.values():
        n = nab.score_corpus(null, labels, profile).normalised
        p = nab.score_corpus(perfect, labels, profile).normalised
        assert abs(n) < 1e-9 and abs(p - 100) < 1e-9, (profile.name, n, p)
    print("scorer check: null detector 0.0, perfect detector 100.0 in every profile")


def by_category(results, labels, profile):
    cats = sorted({name.split("/")[0] for name in results})
    out = {}
    for cat in cats:
        sub = {k: v for k, v in results.items() if k.startswith(cat + "/")}
        out[cat] = sub
    return {cat: nab.score_corpus(sub, labels, profile) for cat, sub in out.items()}


def fixed_threshold(results, labels, profile, threshold):
    files = [nab.prepare_file(n, ts, sc, labels.get(n, []), profile) for n, (ts, sc) in results.items()]
    raw, detected, fps, _ = nab.score_at(files, profile, threshold)
    null = -profile.fn * sum(f.windows for f in files)
    perfect = profile.tp * sum(len(labels.get(n, [])) for n in results)
    return (100 * (raw - null) / (perfect - null) if perfect != null else float("nan")), raw, fps


def robustness(files, labels) -> str:
    base = detector.DetectorConfig()
    variants = {"defaults": {}}
    for name in VARIED:
        value = getattr(base, name)
        for factor, tag in ((0.5, "half"), (2.0, "double")):
            new = type(value)(max(1, round(value * factor))) if isinstance(value, int) else value * factor
            variants[f"{name} {tag} ({new:g})"] = {name: new}
    profile = nab.PROFILES["standard"]
    scored = {}
    lines = ["| variant | standard | threshold | windows detected | FP |", "|---|---:|---:|---:|---:|"]
    for label, overrides in variants.items():
        results, _, _ = score_all(files, overrides)
        scored[label] = results
        c = nab.score_corpus(results, labels, profile)
        lines.append(f"| {label} | {c.normalised:.1f} | {c.threshold:.4f} | {c.detected}/{c.windows} | "
                     f"{c.false_positives} |")
        print(lines[-1])
    cats = sorted({n.split("/")[0] for n in files})
    loco = ["| held-out category | variant chosen on the others | its threshold | held-out score "
            "(chosen) | held-out score (defaults, own threshold) | best variant on it |",
            "|---|---|---:|---:|---:|---:|"]
    for held in cats:
        train = {label: {k: v for k, v in r.items() if not k.startswith(held + "/")} for label, r in scored.items()}
        test = {label: {k: v for k, v in r.items() if k.startswith(held + "/")} for label, r in scored.items()}
        fits = {label: nab.score_corpus(t, labels, profile) for label, t in train.items()}
        chosen = max(fits, key=lambda k: fits[k].normalised)
        if not any(labels.get(k) for k in test[chosen]):
            _, raw, fps = fixed_threshold(test[chosen], labels, profile, fits[chosen].threshold)
            loco.append(f"| {held} (no windows) | {chosen} | {fits[chosen].threshold:.4f} | raw {raw:.2f} "
                        f"({fps} FP) | - | - |")
        else:
            held_score, _, _ = fixed_threshold(test[chosen], labels, profile, fits[chosen].threshold)
            own = nab.score_corpus(test["defaults"], labels, profile).normalised
            best = max(nab.score_corpus(t, labels, profile).normalised for t in test.values())
            loco.append(f"| {held} | {chosen} | {fits[chosen].threshold:.4f} | {held_score:.1f} | {own:.1f} | "
                        f"{best:.1f} |")
        print(loco[-1])
    return "\n".join(["Sensitivity (standard profile, one parameter at a time):", "", *lines, "",
                      "Leave one category out (standard profile):", "", *loco])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nab"), help="NAB folder")
    parser.add_argument("--robustness", action="store_true", help="also the sensitivity and leave-one-out checks")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    files, labels = load(Path(args.data))
    check_scorer(files, labels)

    results, rows, t_score = score_all(files)
    rate = rows / t_score
    e2e = end_to_end_rate(files)
    scores = {name: nab.score_corpus(results, labels, p) for name, p in nab.PROFILES.items()}
    lines = [f"{len(files)} files, {rows:,} rows, {sum(len(v) for v in labels.values() if v)} windows "
             f"(windows in scored files: {scores['standard'].windows})", "",
             "| profile | normalised score | threshold | raw | windows detected | false positives |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c in scores.items():
        lines.append(f"| {name} | {c.normalised:.1f} | {c.threshold:.4f} | {c.raw:.2f} | {c.detected}/{c.windows} | "
                     f"{c.false_positives} |")
    lines += ["", "Per category (standard profile, threshold swept per category):", "",
              "| category | normalised | threshold | windows detected | false positives |", "|---|---:|---:|---:|---:|"]
    for cat, c in by_category(results, labels, nab.PROFILES["standard"]).items():
        shown = f"{c.normalised:.1f}" if c.windows else "- (no windows)"
        lines.append(f"| {cat} | {shown} | {c.threshold:.4f} | {c.detected}/{c.windows} | {c.false_positives} |")
    lines += ["", "Published (full NAB corpus of 58 files, standard profile): " +
              ", ".join(f"{n} {s:.1f}" for n, s in PUBLISHED) + ".", "",
              f"Throughput (one core, CPU time): detector {rate:,.0f} points/s; the command's whole path "
              f"(read, score, write) {e2e:,.0f} points/s."]
    report = "\n".join(lines)
    print(report)
    if args.robustness:
        report += "\n\n" + robustness(files, labels)
    if not args.no_write:
        replace_section("anomaly", report)
        std = scores["standard"]
        append_result("anomaly", f"NAB data folder: {len(files)} files, {rows:,} rows, {std.windows} windows",
                      f"NAB standard {std.normalised:.1f} (threshold {std.threshold:.4f}), low FP "
                      f"{scores['reward_low_FP_rate'].normalised:.1f}, low FN "
                      f"{scores['reward_low_FN_rate'].normalised:.1f}; {rate:,.0f} points/s (one core)",
                      f"targets >= {TARGET_SCORE:g} and >= {TARGET_RATE:,} points/s; Numenta HTM 70.1, KNN-CAD 58.0",
                      f"{std.normalised / TARGET_SCORE:.2f} x score target, {rate / TARGET_RATE:.2f} x rate target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
