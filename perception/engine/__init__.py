"""Training and inference: the loop, checkpoints, logs, and the results JSON.

    from perception.engine.train import train
    from perception.engine.inference import evaluate_checkpoint
    result = train(cfg, "outputs/run1")                       # = perception train CONFIG --work-dir
    summary = evaluate_checkpoint(cfg, "outputs/run1/latest.pt", "data/nuscenes", "v1.0-trainval",
                                  "val", "outputs/run1/eval")  # = perception eval ...

Modules: ``train`` (loop, schedule, optimizer), ``checkpoint`` (atomic files, RNG state),
``logging`` (CSV log, progress line), ``inference`` (run a split, results JSON, metrics).
See docs/training.md. The function ``train`` lives in the module ``train``; it is not re-exported
here, where it would be confused with the module of the same name.
"""
from importlib import import_module

_EXPORTS = {
    "train": ["LRSchedule", "TrainResult", "build_optimizer", "build_train_dataset", "make_loader",
              "seed_everything"],
    "checkpoint": ["atomic_save", "export_model", "list_checkpoints", "load_checkpoint",
                   "model_state", "rng_state", "save_checkpoint", "set_rng_state"],
    "inference": ["attribute_name", "default_attribute", "detections_to_boxes",
                  "evaluate_checkpoint", "results_meta", "run_inference", "to_results",
                  "write_results"],
    "logging": ["CSVLog", "Progress"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    # PEP 562: names resolve on first use, so `import perception.engine` stays light.
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
