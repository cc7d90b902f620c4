"""The training engine, one file per part: config (TrainConfig, presets), optim (optimizers, schedules, EMA),
checkpoint (atomic saves, resume, RNG state), loop (the step loop), losses, logs (CSV, plots, TensorBoard),
distributed (devices, torchrun), evaluate, init (the weights a run starts from).

    from mobilenets.training import TrainConfig, train
    result = train(TrainConfig(model="mobilenet_v1", width_mult=0.5, dataset="fashion-mnist", epochs=2))
    print(result.test_acc, result.out_dir)
"""

from mobilenets.io import atomic_write_text
from mobilenets.training.checkpoint import atomic_save
from mobilenets.training.config import (
    DEMO,
    FIELD_HELP,
    OPTIMIZERS,
    PRESETS,
    RESUME_FREE,
    SCHEDULES,
    TrainConfig,
    demo_config,
    model_kwargs,
)
from mobilenets.training.distributed import (
    Dist,
    all_reduce,
    busy_cores,
    resolve_device,
    set_cpu_threads,
    setup_distributed,
)
from mobilenets.training.evaluate import EvalResult, evaluate, evaluate_file
from mobilenets.training.init import start_model
from mobilenets.training.logs import plot_confusion, plot_curves, write_metrics_csv
from mobilenets.training.loop import TrainResult, default_resolution, load_train_test, train
from mobilenets.training.losses import classification_loss
from mobilenets.training.optim import ModelEma, RMSpropTF, build_optimizer, lr_factor, param_groups
from mobilenets.weights.checkpoint import load_checkpoint, load_model, model_from_checkpoint

__all__ = [
    "DEMO",
    "FIELD_HELP",
    "OPTIMIZERS",
    "PRESETS",
    "RESUME_FREE",
    "SCHEDULES",
    "Dist",
    "EvalResult",
    "ModelEma",
    "RMSpropTF",
    "TrainConfig",
    "TrainResult",
    "all_reduce",
    "atomic_save",
    "atomic_write_text",
    "build_optimizer",
    "busy_cores",
    "classification_loss",
    "default_resolution",
    "demo_config",
    "evaluate",
    "evaluate_file",
    "load_checkpoint",
    "load_model",
    "load_train_test",
    "lr_factor",
    "model_from_checkpoint",
    "model_kwargs",
    "param_groups",
    "plot_confusion",
    "plot_curves",
    "resolve_device",
    "set_cpu_threads",
    "setup_distributed",
    "start_model",
    "train",
    "write_metrics_csv",
]
