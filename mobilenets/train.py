"""The training engine now lives in :mod:`mobilenets.training`, one file per part; this module keeps the old
import path working (``from mobilenets.train import TrainConfig, train``), private helpers included.
"""

from mobilenets.training import *  # noqa: F403
from mobilenets.training import __all__ as _public
from mobilenets.training.checkpoint import _ckpt_step, _rng_state, _set_rng_state, _to_tuple
from mobilenets.training.distributed import _all_reduce, _autocast, _rank_part, _unwrap
from mobilenets.training.evaluate import _eval_batches
from mobilenets.training.logs import _NullWriter, _save_fig, _tensorboard
from mobilenets.training.loop import _step_seed, _StopFlag, _train, _train_batches

__all__ = [
    *_public,
    "_NullWriter",
    "_StopFlag",
    "_all_reduce",
    "_autocast",
    "_ckpt_step",
    "_eval_batches",
    "_rank_part",
    "_rng_state",
    "_save_fig",
    "_set_rng_state",
    "_step_seed",
    "_tensorboard",
    "_to_tuple",
    "_train",
    "_train_batches",
    "_unwrap",
]
