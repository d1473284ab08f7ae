"""nuScenes detection metrics, vectorized and identical to the devkit's DetectionEval.

    from perception.evaluation import evaluate
    summary = evaluate("results.json", "data/nuscenes", "v1.0-trainval", "val", "outputs/eval")

See docs/evaluation.md. Names are imported on first use (PEP 562): the devkit's evaluation code
takes seconds to import, and the CLI's argparse glue (``commands``) must not pay for it.
"""
from importlib import import_module

_EXPORTS = {
    "metrics": ["MetricsMismatchError", "compare_summaries", "compute_metric_data", "compute_metrics",
                "evaluate", "format_summary", "get_config", "summarize"],
    "results": ["BoxArrays", "from_eval_boxes", "load_ground_truth", "results_to_arrays"],
    "commands": ["BACKENDS", "add_eval_bench_arguments", "add_metrics_arguments", "eval_bench",
                 "metrics_command"],
    "bench": ["run_eval_bench"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
