"""Quantization-aware training: the network trains through fake int8 quantization of its target runtime.

PyTorch's PT2E QAT does the work: the model is exported (``torch.export``), XNNPACK's quantizer annotates it
with the int8 scheme of the runtime the run targets, and ``prepare_qat_pt2e`` inserts fake-quantize nodes on
the weights (per output channel, symmetric) and the activations (per tensor, affine, moving-average ranges), and
rewrites every conv → BN pair so that the weights are quantized as they will be once BN is folded into them.

QAT fine-tunes the network in the form every int8 exporter quantizes: BatchNorm folded into the convolutions
(``quant.fold.fold_bn``, its statistics frozen, as QAT recipes do late in training), ReLU6 as relu → clamp and
TF "SAME" pads static. The weights fake-quantized in training are then exactly the ones each exporter rounds.
(PT2E can also simulate the fold with BN still training, but its conv-BN rewrites cost ~45 s of pattern tracing
per model on a 2-core CPU, and a short fine-tune from trained weights gains nothing from moving statistics.)
So QAT needs a trained starting point (``init``).

The prepared graph holds the folded model's parameters (the same tensors): the optimizer trains them, and
``model.pt`` stores them back in the model's own layout (each BN an identity with the folded bias, see
:meth:`QATModel.float_state`), so eval, export and predict load it as any model; the activations' fake-quantize
state (ranges, scales, zero points) goes beside them under "qat". An int8 export of a QAT ``model.pt`` for a
runtime of its scheme converts that very graph (below): the int8 file computes what training saw.

The schemes (``TARGETS``): ExecuTorch-XNNPACK and LiteRT use int8 activations and int8 weights in [-127, 127];
ONNX Runtime and OpenVINO use u8 activations (affine int8 is the same grid, shifted by 128) and the 7-bit
weights (|w| ≤ 64) that keep AVX2-only x86 from saturating its 16-bit pair sums (see deploy/onnx.py).

Where the int8 file comes from: the graph it trained, for the runtimes of its scheme (``SCHEMES``), with the
scales and zero points training used, no calibration. ExecuTorch and LiteRT take PT2E's ``convert_pt2e`` of it
(:func:`converted_graph`; LiteRT through litert-torch's static int8 path, NHWC at the input); ONNX Runtime and
OpenVINO a QDQ ONNX file of it (:func:`fake_quant_graph`, ``deploy.onnx.quantize_qat``; OpenVINO's ONNX
frontend makes its Q/DQ pairs the FakeQuantize ops NNCF writes). A runtime of the other scheme quantizes the
QAT-trained float weights with its own quantizer, as for any model (``mobilenets export`` says which it did).

Weights are fake-quantized symmetrically per channel by a plain FakeQuantize (see :func:`quantizer`): XNNPACK's
QAT config uses the fused observer kernel, which gives a channel whose weights all share one sign an affine grid
no int8 file stores.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator

import torch
from torch import nn

from mobilenets.deps import quiet, require
from mobilenets.errors import MobileNetsError
from mobilenets.quant.fold import conv_bn_pairs, fold_bn, static_padding
from mobilenets.quant.passes import drop_relu6_clamps, relu6_as_relu_clamp, share_relu6_ranges

# target runtime → (weight qmin, weight qmax) of its int8 scheme; activations are int8 affine for all of them.
# ONNX Runtime's reduce_range grid is [-64, 64] (scale max|w| / 64); NNCF's overflow fix halves its [-127, 127].
TARGETS = {"executorch": (-127, 127), "tflite": (-127, 127), "onnx": (-64, 64), "openvino": (-63, 63)}
QAT_STATE_VERSION = 2  # 2: symmetric weight fake quantization (1 had the fused kernel's affine channels)
# target → the formats whose int8 file is converted from the graph it trained (the same int8 scheme).
SCHEMES = {
    "executorch": ("executorch", "tflite"),
    "tflite": ("tflite", "executorch"),
    "onnx": ("onnx", "openvino"),
    "openvino": ("openvino", "onnx"),
}


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise MobileNetsError(f"unknown --qat target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def quantizer(target: str, is_qat: bool = True):
    """XNNPACK's PT2E quantizer set to ``target``'s int8 scheme (per-channel symmetric weights)."""
    xnn = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "quantization-aware training")
    qmin, qmax = TARGETS[check_target(target)]
    config = xnn.get_symmetric_quantization_config(
        is_per_channel=True, is_qat=is_qat, weight_qmin=qmin, weight_qmax=qmax
    )
    if is_qat:
        # XNNPACK's QAT config fake-quantizes weights with the fused observer kernel, whose "symmetric" per-channel
        # scales are affine for a channel of one sign (zero point ±64 on a 3×3 depthwise filter of positive
        # weights): training saw a grid the int8 file (symmetric, zero point 0) does not have. The plain
        # FakeQuantize takes its scales from the observer's symmetric calculate_qparams, as convert_pt2e does.
        fq = require("torchao.quantization.pt2e.fake_quantize", "quantization-aware training")
        obs = require("torchao.quantization.pt2e.observer", "quantization-aware training")
        weight_fq = fq.FakeQuantize.with_args(observer=obs.MovingAveragePerChannelMinMaxObserver, eps=2**-12)
        config = dataclasses.replace(
            config, weight=dataclasses.replace(config.weight, observer_or_fake_quant_ctr=weight_fq)
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
        share_relu6_ranges(self.graph)
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
        """The trained weights as a state_dict of the original model (see :func:`folded_state`)."""
        return folded_state(self.template, self.float_model)

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


def folded_state(template: nn.Module, float_model: nn.Module) -> dict:
    """``float_model``'s weights (``template`` with BN folded, trained) as a state_dict of ``template``: each folded
    conv's weight, and its BN an identity (mean 0, variance 1 − ε, scale 1) whose shift is the folded bias.
    ``fold_bn`` gives them back."""
    folded = float_model.state_dict()
    state = {k: v.detach().clone() for k, v in template.state_dict().items()}
    state.update({k: v.detach().clone() for k, v in folded.items() if k in state})
    names = {id(m): name for name, m in template.named_modules()}
    for parent, conv_name, bn_name in conv_bn_pairs(template):
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


def converted_graph(model: nn.Module, qat: dict, resolution: int, format: str, fold_quantize: bool = True):
    """The int8 graph of a QAT run, converted by PT2E (``convert_pt2e``) from the graph it trained at batch 1
    (ExecuTorch's lowering and litert-torch take it); ``format`` must share the scheme it trained for."""
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", f"int8 {format} export")
    check_export(qat, format, resolution)
    trained = from_trained(model, qat, batch_size=1)
    with quiet(), torch.no_grad():
        return pt2e.convert_pt2e(drop_relu6_clamps(trained.graph), fold_quantize=fold_quantize)


def fake_quant_graph(model: nn.Module, qat: dict, resolution: int) -> torch.fx.GraphModule:
    """The graph a QAT run trained, with each fake-quantize module replaced by the plain
    ``torch.fake_quantize_per_*_affine`` op at the scale and zero point training used (the exact forward
    pass of the trained graph, any batch size; what the TorchScript ONNX exporter writes as QDQ pairs).

    Activations move to u8 (zero point + 128: the same grid, the type ONNX Runtime's and OpenVINO's x86
    kernels take). Weights are stored fake-quantized (already on the target's grid, e.g. |w| ≤ 64 scales
    for ONNX Runtime's 7-bit one) under a per-channel Q/DQ of the full int8 range, which leaves them unchanged
    and which ONNX allows. (PT2E's ``convert_pt2e`` graph holds quantized_decomposed ops, which the TorchScript
    exporter does not take.)
    """
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    trained = from_trained(model, qat)
    gm = drop_relu6_clamps(trained.graph)
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        fq = gm.get_submodule(node.target)
        if not isinstance(fq, FakeQuantizeBase):
            continue
        (x,) = node.args
        scale, zero_point = fq.scale.detach().clone(), fq.zero_point.detach().clone()
        per_channel = fq.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
        with graph.inserting_before(node):
            if per_channel:
                if x.op != "get_attr":
                    raise MobileNetsError(
                        f"per-channel fake quantization of a non-constant ({x.name}) in the QAT graph"
                    )
                with torch.no_grad():  # the weight on the trained grid, clamped as training did
                    weight = fq(operator.attrgetter(x.target)(gm).detach())
                names = [f"_qdq_{count}_{k}" for k in ("weight", "scale", "zero_point")]
                for name, value in zip(names, (weight, scale.float(), zero_point.int())):
                    gm.register_buffer(name, value)
                w, s, zp = (graph.get_attr(n) for n in names)
                new = graph.call_function(torch.fake_quantize_per_channel_affine, (w, s, zp, fq.ch_axis, -128, 127))
            else:
                if (fq.quant_min, fq.quant_max) != (-128, 127):
                    raise MobileNetsError(
                        f"unexpected activation grid [{fq.quant_min}, {fq.quant_max}] in the QAT graph"
                    )
                args = (x, float(scale), int(zero_point) + 128, 0, 255)
                new = graph.call_function(torch.fake_quantize_per_tensor_affine, args)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    allow_exported_model_train_eval(gm)  # the ONNX exporter switches it to eval (dropout, BN are eval already)
    gm.in_chans = trained.in_chans
    return gm


def converts_to(qat: dict, format: str) -> bool:
    """Whether a QAT model's graph converts to ``format``'s int8 as it trained: the same int8 scheme (signed
    activations and 8-bit weights for ExecuTorch and LiteRT, u8 activations and 7-bit weights for ONNX Runtime
    and OpenVINO; a 64-step weight grid is as safe under OpenVINO's 63 as ONNX Runtime's own)."""
    return format in SCHEMES.get(qat["target"], ())


def check_export(qat: dict, format: str, resolution: int) -> None:
    """A QAT model converts to ``format``'s int8 only when it trained for its scheme, at that resolution."""
    if not converts_to(qat, format):
        raise MobileNetsError(f"this model was trained for {qat['target']} int8, not {format}")
    if resolution != qat["resolution"]:
        raise MobileNetsError(
            f"this QAT model was trained at {qat['resolution']} px; export it at that --resolution, not {resolution}"
        )
