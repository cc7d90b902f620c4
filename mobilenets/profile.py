"""Exact Mult-Adds and parameters of any model at any input size, and the paper's cost formulas (§3.1).

The profiler runs one forward pass with hooks on every convolution and linear layer and counts what
actually executes, so it is exact for any architecture — ours, torchvision's, or a user's — and never
a hand-kept table. Mult-Adds follow the paper: convolutions and fully connected layers (BatchNorm
folds into the conv at inference; ReLU, softmax and pooling are not multiply-adds), and the products of two
activations that attention computes: every ``torch.matmul``/``@``/``bmm``, two-operand ``einsum`` and
``F.scaled_dot_product_attention`` call (Q·Kᵀ and attention·V), whichever module makes it, and
``nn.MultiheadAttention`` (its projections too, which it applies without calling its Linear modules).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from mobilenets.errors import MobileNetsError

# ---------------------------------------------------------------------------------------------------
# The paper's layer-level formulas (Eqs. 1–5). Dk: kernel side, M: input channels, N: output channels,
# Df: output feature map side.


def standard_conv_mult_adds(kernel_size: int, in_channels: int, out_channels: int, feature_size: int) -> int:
    """Standard convolution: Dk·Dk·M·N·Df·Df (paper Eq. 2)."""
    return kernel_size**2 * in_channels * out_channels * feature_size**2


def depthwise_conv_mult_adds(kernel_size: int, channels: int, feature_size: int) -> int:
    """Depthwise convolution, one filter per input channel: Dk·Dk·M·Df·Df (paper Eq. 3)."""
    return kernel_size**2 * channels * feature_size**2


def pointwise_conv_mult_adds(in_channels: int, out_channels: int, feature_size: int) -> int:
    """1×1 pointwise convolution: M·N·Df·Df."""
    return in_channels * out_channels * feature_size**2


def depthwise_separable_mult_adds(kernel_size: int, in_channels: int, out_channels: int, feature_size: int) -> int:
    """Depthwise + pointwise: Dk·Dk·M·Df·Df + M·N·Df·Df (paper Eq. 4)."""
    return depthwise_conv_mult_adds(kernel_size, in_channels, feature_size) + pointwise_conv_mult_adds(
        in_channels, out_channels, feature_size
    )


def standard_conv_params(kernel_size: int, in_channels: int, out_channels: int) -> int:
    return kernel_size**2 * in_channels * out_channels


def depthwise_separable_params(kernel_size: int, in_channels: int, out_channels: int) -> int:
    return kernel_size**2 * in_channels + in_channels * out_channels


def separable_cost_ratio(out_channels: int, kernel_size: int = 3) -> float:
    """Cost of a depthwise separable conv relative to a standard one: 1/N + 1/Dk² (paper Eq. 5)."""
    return 1 / out_channels + 1 / kernel_size**2


# ---------------------------------------------------------------------------------------------------
# The profiler.

TABLE2_TYPES = ("Conv 1×1", "Conv DW 3×3", "Conv 3×3", "Fully Connected")
MATMUL = "MatMul"  # the type of a product of two activations (attention's Q·Kᵀ and attention·V)
ATTENTION = "MultiheadAttention"  # nn.MultiheadAttention, projections and matmuls together


def layer_type(module: nn.Module) -> str:
    """The paper's Table 2 name of a layer's type, e.g. "Conv DW 3×3"; other shapes are named likewise."""
    if isinstance(module, nn.Linear):
        return "Fully Connected"
    kh, kw = module.kernel_size
    size = f"{kh}×{kw}"
    if module.groups == 1:
        return f"Conv {size}"
    if module.groups == module.in_channels == module.out_channels:
        return f"Conv DW {size}"
    return f"Conv {size} g{module.groups}"


@dataclass
class LayerCost:
    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    mult_adds: int
    params: int  # all of the layer's own parameters (weight and bias)
    weights: int  # its weight tensor alone: what the paper counts


@dataclass
class Profile:
    """Costs of one forward pass of one image.

    ``params`` counts every parameter of the model once, BatchNorm's and biases too (as torchvision and
    timm report). ``paper_params`` counts conv and FC weights only, as the MobileNets paper does (its
    Table 2 shares and e.g. 1.32M for 0.50 MobileNet-160 need it: BatchNorm folds into the weights).
    ``layers`` lists each conv/linear call, and each product of two activations (type "MatMul", no parameters), in
    execution order.
    """

    input_size: tuple[int, int, int]
    layers: list[LayerCost] = field(default_factory=list)
    params: int = 0

    @property
    def mult_adds(self) -> int:
        return sum(layer.mult_adds for layer in self.layers)

    @property
    def paper_params(self) -> int:
        return sum(layer.weights for layer in self.layers)

    def by_type(self) -> dict[str, tuple[float, float]]:
        """Share of Mult-Adds and of conv/FC parameters per layer type, as paper Table 2 (fractions)."""
        madds: dict[str, int] = defaultdict(int)
        params: dict[str, int] = defaultdict(int)
        for layer in self.layers:
            madds[layer.type] += layer.mult_adds
            params[layer.type] += layer.weights
        total_madds, total_params = sum(madds.values()) or 1, sum(params.values()) or 1
        order = [t for t in TABLE2_TYPES if t in madds] + sorted(t for t in madds if t not in TABLE2_TYPES)
        return {t: (madds[t] / total_madds, params[t] / total_params) for t in order}

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mult_adds": self.mult_adds,
            "params": self.params,
            "paper_params": self.paper_params,
            "by_type": {t: {"mult_adds_share": m, "params_share": p} for t, (m, p) in self.by_type().items()},
            "layers": [asdict(layer) for layer in self.layers],
        }


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Mult-Adds of one conv or linear call producing ``output`` (batch of 1)."""
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    kh, kw = module.kernel_size
    # Each output element is a dot product over (in_channels / groups)·kh·kw inputs.
    return output[0].numel() * (module.in_channels // module.groups) * kh * kw


# The functions whose calls multiply two tensors: counted wherever they are called (a user's attention too).
MATMUL_FUNCTIONS = (
    torch.matmul,
    torch.bmm,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.Tensor.bmm,
)


def matmul_mult_adds(a: torch.Tensor, output: torch.Tensor) -> int:
    """``a @ b``: each output element is a dot product over a's last dimension (broadcast batch dims included)."""
    return output.numel() * a.shape[-1]


def einsum_mult_adds(equation: str, operands: list[torch.Tensor], output: torch.Tensor) -> int:
    """A two-operand einsum: each output element sums over the letters that appear in the inputs but not in the
    output (implicit form: the letters that appear twice)."""
    inputs, _, explicit = equation.replace(" ", "").partition("->")
    letters = [c for c in inputs if c.isalpha()]
    kept = set(explicit) if explicit else {c for c in letters if letters.count(c) == 1}
    sizes: dict[str, int] = {}
    for term, operand in zip(inputs.split(","), operands):
        named = term.replace("...", "")
        dims = operand.shape[len(operand.shape) - len(named) :] if "..." in term else operand.shape
        sizes.update(zip(named, dims))
    return output.numel() * math.prod(sizes[c] for c in set(letters) - kept)


class _MatmulCounter(TorchFunctionMode):
    """Records the matmuls, einsums and scaled-dot-product attentions of a forward pass, each under the name of the
    innermost module running when it is called (``stack``, kept by the profiler's module hooks)."""

    def __init__(self, record, stack: list[str]):
        super().__init__()
        self.record, self.stack = record, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        where = f"{self.stack[-1]}." if self.stack and self.stack[-1] else ""
        if func in MATMUL_FUNCTIONS:
            self.record(f"{where}matmul", args[0], out, matmul_mult_adds(args[0], out))
        elif func is torch.einsum:
            operands = list(args[1][0] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
            if len(operands) == 2:
                self.record(f"{where}einsum", operands[0], out, einsum_mult_adds(args[0], operands, out))
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1] if len(args) > 1 else kwargs["key"]
            # out: (..., L, Ev); Q·Kᵀ makes (..., L, S) over E, attention·V sums over S.
            scores = out.numel() // out.shape[-1] * k.shape[-2]
            self.record(f"{where}attention Q·Kᵀ", q, out, scores * q.shape[-1])
            self.record(f"{where}attention·V", q, out, scores * out.shape[-1])
        return out


def multihead_attention_mult_adds(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> int:
    """nn.MultiheadAttention: Q/K/V projections, Q·Kᵀ and attention·V over all heads, output projection, for every
    sequence of the batch. Its projections run as functions, not as Linear calls the hooks would see."""
    seq_dim = -2 if module.batch_first or query.ndim == 2 else 0
    target, source, e = query.shape[seq_dim], key.shape[seq_dim], module.embed_dim
    sequences = query.numel() // (target * e)
    projections = target * e * e + source * module.kdim * e + source * module.vdim * e + target * e * e
    return sequences * (projections + 2 * target * source * e)


def profile(model: nn.Module, input_size: int | tuple[int, int] | None = None, in_chans: int | None = None) -> Profile:
    """Count the Mult-Adds and parameters of ``model`` on one image of ``input_size`` (side or (H, W)).

    Defaults to the model's own ``resolution`` and ``in_chans`` when it has them (every registered model).
    """
    if input_size is None:
        input_size = getattr(model, "resolution", 224)
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    in_chans = in_chans or getattr(model, "in_chans", 3)
    min_res = getattr(model, "min_resolution", 1)
    if min(h, w) < min_res:
        raise MobileNetsError(f"input {h}x{w} is too small for this model: use at least {min_res}x{min_res}")

    result = Profile(input_size=(in_chans, h, w), params=sum(p.numel() for p in model.parameters()))
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []  # the modules running now, outermost first: who made a matmul

    def record_matmul(name: str, a: torch.Tensor, output: torch.Tensor, mult_adds: int) -> None:
        result.layers.append(LayerCost(name, MATMUL, tuple(a.shape[1:]), tuple(output.shape[1:]), mult_adds, 0, 0))

    def enter(module: nn.Module, inputs) -> None:
        stack.append(names[module])

    def leave(module: nn.Module, inputs, output) -> None:
        stack.pop()

    def attention_hook(module: nn.MultiheadAttention, inputs: tuple[torch.Tensor, ...], output) -> None:
        query, key = inputs[0], inputs[1]
        params = sum(p.numel() for p in module.parameters())
        weights = sum(p.numel() for n, p in module.named_parameters() if "bias" not in n)
        madds = multihead_attention_mult_adds(module, query, key)
        result.layers.append(
            LayerCost(
                names[module], ATTENTION, tuple(query.shape[1:]), tuple(output[0].shape[1:]), madds, params, weights
            )
        )

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        result.layers.append(
            LayerCost(
                names[module],
                layer_type(module),
                tuple(inputs[0].shape[1:]),
                tuple(output.shape[1:]),
                _mult_adds(module, output),
                params,
                module.weight.numel(),
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [
        m.register_forward_hook(attention_hook) for m in model.modules() if isinstance(m, nn.MultiheadAttention)
    ]
    handles += [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave, always_call=True) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _MatmulCounter(record_matmul, stack):
            device = next(model.parameters()).device
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    # A module called twice costs its Mult-Adds twice but owns its parameters once.
    seen: set[str] = set()
    for layer in result.layers:
        if layer.name in seen:
            layer.params = layer.weights = 0
        seen.add(layer.name)
    return result


def grid_table(family: str = "mobilenet_v1") -> str:
    """Markdown table of Mult-Adds (M) for the registered α×ρ variants of ``family``, with parameters."""
    from mobilenets.models import FAMILY_GRIDS, create_model

    widths, resolutions = FAMILY_GRIDS[family]
    lines = [
        "| α \\ resolution | " + " | ".join(str(r) for r in resolutions) + " | params (M), paper's count (all) |",
        "|---" * (len(resolutions) + 2) + "|",
    ]
    for alpha in widths:
        cells = [profile(create_model(f"{family}_{alpha}_{r}")).mult_adds / 1e6 for r in resolutions]
        prof = profile(create_model(f"{family}_{alpha}_{resolutions[0]}"))
        lines.append(
            f"| {alpha} | "
            + " | ".join(f"{c:.1f}" for c in cells)
            + f" | {prof.paper_params / 1e6:.2f} ({prof.params / 1e6:.2f}) |"
        )
    return "\n".join(lines)


def format_count(n: float, unit: float = 1e6, digits: int = 2) -> str:
    return f"{n / unit:,.{digits}f}"


def format_profile(prof: Profile, per_layer: bool = False, title: str = "") -> str:
    """A human-readable report: per-layer table (optional), the Table 2 breakdown, and totals."""
    lines = []
    if title:
        lines.append(title)
    if per_layer:
        lines.append(f"{'layer':<34} {'type':<16} {'output':<16} {'Mult-Adds (M)':>14} {'params':>11}")
        for layer in prof.layers:
            shape = "×".join(str(d) for d in layer.output_shape)
            lines.append(
                f"{layer.name:<34} {layer.type:<16} {shape:<16} {format_count(layer.mult_adds):>14} {layer.params:>11,}"
            )
        lines.append("")
    lines.append(f"{'type':<20} {'Mult-Adds':>10} {'parameters':>11}")
    for t, (m, p) in prof.by_type().items():
        lines.append(f"{t:<20} {m:>10.2%} {p:>11.2%}")
    lines.append("")
    c, h, w = prof.input_size
    lines.append(
        f"input {c}×{h}×{w}: {format_count(prof.mult_adds)} M Mult-Adds, {format_count(prof.params)} M parameters "
        f"({format_count(prof.paper_params)} M conv/FC weights, the paper's count)"
    )
    return "\n".join(lines)
