"""Quantization-aware training: the network trains through fake int8 quantization of its target runtime.

PyTorch's PT2E QAT does the work: the model is exported (``torch.export``), XNNPACK's quantizer annotates it
with the int8 scheme of the runtime the run targets, and ``prepare_qat_pt2e`` inserts fake-quantize nodes on
the weights (per output channel, symmetric) and the activations (per tensor, affine, moving-average ranges), and
rewrites every conv → BN pair so that the weights are quantized as they will be once BN is folded into them.

QAT fine-tunes the network in the form every int8 exporter quantizes: BatchNorm folded into the convolutions
(``deploy.fold.fold_bn``, its statistics frozen, as QAT recipes do late in training), ReLU6 as relu → clamp and
TF "SAME" pads static. The weights fake-quantized in training are then exactly the ones each exporter rounds.
(PT2E can also simulate the fold with BN still training, but its conv-BN rewrites cost ~45 s of pattern tracing
per model on a 2-core CPU, and a short fine-tune from trained weights gains nothing from moving statistics.)
So QAT needs a trained starting point (``init``).

The prepared graph holds the folded model's parameters (the same tensors): the optimizer trains them, and
``model.pt`` stores them back in the model's own layout (each BN an identity with the folded bias, see
:meth:`QATModel.float_state`), so eval, export and predict load it as any model; the activations' fake-quantize
state (ranges, scales, zero points) goes beside them under "qat". An ExecuTorch export of a QAT ``model.pt``
converts that very graph (:func:`executorch_program`): the int8 file computes what training saw.

The schemes (``TARGETS``): ExecuTorch-XNNPACK and LiteRT use int8 activations and int8 weights in [-127, 127];
ONNX Runtime and OpenVINO use u8 activations (affine int8 is the same grid, shifted by 128) and the 7-bit
weights (|w| ≤ 64) that keep AVX2-only x86 from saturating its 16-bit pair sums (see deploy/onnx.py).

Where the int8 file comes from: ExecuTorch converts the trained graph itself (:func:`executorch_program`). ONNX
Runtime, OpenVINO and LiteRT quantize the QAT-trained float weights with their own quantizer (``mobilenets
export`` as for any model): the weights fall on the grid they trained on (the same per-channel max|w| scales),
the activation ranges are calibrated again. Converting the PT2E graph for them (QDQ ONNX through the dynamo
exporter, OpenVINO's PT2E frontend, litert-torch with a foreign quantizer's annotations) is not done here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from mobilenets.errors import MobileNetsError

# target runtime → (weight qmin, weight qmax) of its int8 scheme; activations are int8 affine for all of them.
# ONNX Runtime's reduce_range grid is [-64, 64] (scale max|w| / 64); NNCF's overflow fix halves its [-127, 127].
TARGETS = {"executorch": (-127, 127), "tflite": (-127, 127), "onnx": (-64, 64), "openvino": (-63, 63)}
QAT_STATE_VERSION = 1


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise MobileNetsError(f"unknown --qat target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def quantizer(target: str, is_qat: bool = True):
    """XNNPACK's PT2E quantizer set to ``target``'s int8 scheme (per-channel symmetric weights)."""
    from mobilenets.deploy.deps import require

    xnn = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "quantization-aware training")
    qmin, qmax = TARGETS[check_target(target)]
    config = xnn.get_symmetric_quantization_config(
        is_per_channel=True, is_qat=is_qat, weight_qmin=qmin, weight_qmax=qmax
    )

    class FoldedQuantizer(xnn.XNNPACKQuantizer):
        # Without the conv → BN patterns: our graphs have BN folded already, and those annotators trace their
        # patterns (~6 s on 2 cores) whether or not a graph has a BN to match.
        SUPPORTED_PATTERNS = [p for p in xnn.XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    return FoldedQuantizer().set_global(config)


class QATModel(nn.Module):
    """A float model trained through PT2E fake quantization; behaves like the model in the training loop.

    ``float_model`` is the network the graph was traced from (ReLU6 written as relu → clamp and TF "SAME" pads
    made static, as the int8 exporters do); the graph shares its parameters and BN buffers. ``train()`` and
    ``eval()`` switch the graph's BN and dropout with torchao's helpers (an exported graph has no modes).
    """

    def __init__(self, model: nn.Module, target: str, resolution: int, batch_size: int | None = None):
        super().__init__()
        from mobilenets.deploy.deps import quiet, require
        from mobilenets.deploy.fold import fold_bn, relu6_as_relu_clamp, static_padding

        pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "quantization-aware training")
        self.target, self.resolution, self.batch_size = check_target(target), resolution, batch_size
        self.in_chans, self.num_classes = model.in_chans, getattr(model, "num_classes", None)
        # The copies keep parameter names; the graph below shares the copy's tensors, which the optimizer trains.
        float_model = relu6_as_relu_clamp(static_padding(fold_bn(model), resolution)).train()
        object.__setattr__(self, "float_model", float_model)  # not submodules: state_dict is the graph's
        object.__setattr__(self, "template", model)
        device = next(float_model.parameters()).device
        # Training traces any batch ≥ 2; a file's graph is traced at its own batch (ExecuTorch's 1).
        example = torch.randn(batch_size or 2, model.in_chans, resolution, resolution, device=device)
        dynamic = None if batch_size else ({0: torch.export.Dim("batch", min=2)},)
        with quiet():
            graph = torch.export.export(float_model, (example,), dynamic_shapes=dynamic).module()
            self.graph = pt2e.prepare_qat_pt2e(graph, quantizer(target))
        self._has_modes = any(_has_mode(n) for n in self.graph.graph.nodes)
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Traced for batch ≥ 2 (a 0/1 batch axis would be specialized away): one image runs as two.
        if x.shape[0] == 1 and self.batch_size is None:
            return self.graph(x.expand(2, *x.shape[1:]))[:1]
        return self.graph(x)

    def train(self, mode: bool = True) -> QATModel:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        if self._has_modes:  # the helpers trace their patterns on every call: only when there is a mode to switch
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        # Observers keep moving their ranges in any mode: evaluation must not (test data would calibrate them).
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        self.float_model.train(mode)
        return self

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator:
        return self.float_model.named_parameters(prefix, recurse, remove_duplicate)

    def float_state(self) -> dict:
        """The trained weights as a state_dict of the original model: each folded conv's weight, and its BN an
        identity (mean 0, variance 1 − ε, scale 1) whose shift is the folded bias. ``fold_bn`` gives them back."""
        from mobilenets.deploy.fold import conv_bn_pairs

        folded = self.float_model.state_dict()
        state = {k: v.detach().clone() for k, v in self.template.state_dict().items()}
        state.update({k: v.detach().clone() for k, v in folded.items() if k in state})
        names = {id(m): name for name, m in self.template.named_modules()}
        for parent, conv_name, bn_name in conv_bn_pairs(self.template):
            prefix = names[id(parent)] + "." if names[id(parent)] else ""
            conv, bn = f"{prefix}{conv_name}.", f"{prefix}{bn_name}."
            bias = folded[conv + "bias"]
            if conv + "bias" in state:
                state[conv + "bias"] = torch.zeros_like(bias)
            bn_module = parent._modules[bn_name]
            state[bn + "running_mean"] = torch.zeros_like(bias)
            state[bn + "running_var"] = torch.full_like(bias, 1.0 - bn_module.eps)
            state[bn + "weight"] = torch.ones_like(bias)
            state[bn + "bias"] = bias.detach().clone()
            if bn + "num_batches_tracked" in state:
                state[bn + "num_batches_tracked"] = torch.zeros_like(state[bn + "num_batches_tracked"])
        return state

    def qat_state(self) -> dict:
        """What ``model.pt`` keeps beyond the float weights: the target and the fake-quantize buffers."""
        float_keys = set(self.float_model.state_dict())
        state = {k: v.detach().clone() for k, v in self.graph.state_dict().items() if k not in float_keys}
        return {"version": QAT_STATE_VERSION, "target": self.target, "resolution": self.resolution, "state": state}

    def load_qat_state(self, qat: dict) -> QATModel:
        known = set(qat["state"]) | set(self.float_model.state_dict())
        missing = [k for k in self.graph.state_dict() if k not in known]
        if missing or qat.get("version") != QAT_STATE_VERSION:
            raise MobileNetsError(
                "the QAT state in this model.pt does not fit the model (re-run `mobilenets train --qat`)"
            )
        self.graph.load_state_dict({**self.float_model.state_dict(), **qat["state"]})
        return self


def _has_mode(node) -> bool:
    """A node that computes differently in training and evaluation: a BN, a dropout with p > 0."""
    target = str(node.target)
    if "dropout" in target:
        return len(node.args) > 1 and isinstance(node.args[1], float) and node.args[1] > 0
    return "batch_norm" in target


def prepare(model: nn.Module, target: str, resolution: int, batch_size: int | None = None) -> QATModel:
    """``model`` ready for quantization-aware training towards ``target`` (a format of ``mobilenets export``).

    ``batch_size`` None traces any batch (training); a number fixes it (the graph an int8 file is converted from).
    """
    return QATModel(model, target, resolution, batch_size)


def from_trained(model: nn.Module, qat: dict, batch_size: int | None = None) -> QATModel:
    """The QAT graph of a trained ``model`` (float weights from model.pt) with its saved fake-quantize state."""
    return prepare(model, qat["target"], qat["resolution"], batch_size).load_qat_state(qat).eval()


def check_config(cfg) -> None:
    """The training options QAT cannot run with, as one clear error."""
    if not cfg.qat:
        return
    check_target(cfg.qat)
    if not cfg.init:
        raise MobileNetsError(
            "--qat fine-tunes a trained model (BN folded, statistics frozen): train it first, then pass its "
            "model.pt with --init (or --init pretrained)"
        )
    clash = [
        flag
        for flag, on in (
            ("--compile", cfg.compile),
            ("--freeze", cfg.freeze),
            ("--freeze-epochs", cfg.freeze_epochs),
            ("--ema-decay", (cfg.ema_decay or 0) > 0),
            ("--amp", cfg.amp not in ("off", "auto")),
        )
        if on
    ]
    if clash:
        raise MobileNetsError(f"--qat trains through fake int8 quantization; drop {', '.join(clash)} with it")


def executorch_program(model: nn.Module, qat: dict, resolution: int):
    """The int8 graph of a QAT run, converted by PT2E from the graph it trained (for ExecuTorch's lowering)."""
    from mobilenets.deploy.deps import quiet, require

    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "int8 ExecuTorch export")
    if qat["target"] != "executorch":
        raise MobileNetsError(f"this model was trained for {qat['target']} int8, not ExecuTorch")
    if resolution != qat["resolution"]:
        raise MobileNetsError(
            f"this QAT model was trained at {qat['resolution']} px; export it at that --resolution, not {resolution}"
        )
    trained = from_trained(model, qat, batch_size=1)
    with quiet(), torch.no_grad():
        return pt2e.convert_pt2e(trained.graph)
