"""The eval benchmark runs end to end at a tiny size and reports what `perception bench` prints."""
import argparse
import json

from perception.evaluation import bench


def test_run_eval_bench_small():
    r = bench.run_eval_bench(samples=12, preds_per_sample=60, devkit_samples=6, load_samples=3, repeat=1)
    assert r["identical"] is True
    assert r["ours_ms"] > 0 and r["devkit_ms"] > 0 and r["speedup"] > 0
    assert r["samples"] == 12 and r["predictions"] == 12 * 60 and r["devkit_extrapolated"] is True
    json.dumps({"eval": r})                                    # JSON-ready


def test_make_eval_set_shape():
    gt, pred = bench.make_eval_set(samples=30, preds_per_sample=500, seed=1)
    counts = [int((pred.sample == s).sum()) for s in range(30)]
    assert counts == [500] * 30                                 # the cap, exactly
    assert (gt.num_pts != 0).all() and len(gt) > 30 * 10
    assert (pred.sample[1:] >= pred.sample[:-1]).all()          # grouped by sample


def test_bench_arguments():
    from perception.evaluation.commands import add_eval_bench_arguments
    p = argparse.ArgumentParser()
    add_eval_bench_arguments(p)
    a = p.parse_args(["--samples", "100", "--devkit-samples", "10"])
    assert (a.samples, a.preds_per_sample, a.devkit_samples, a.repeat) == (100, 500, 10, 3)
    assert p.parse_args([]).devkit_samples == 1000
