"""timm MobileNet state dicts (``.pth``/``.bin`` read with ``weights_only=True``, or ``.safetensors``): V1
(``mobilenetv1_*``), V2 (``mobilenetv2_*``), V3 (``mobilenetv3_*``, ``tf_mobilenetv3_*``) and V4
(``mobilenetv4_conv_*``, ``mobilenetv4_hybrid_*``), and timm's ``legacy_xception``, mapped to our names with every
shape checked.

A timm state dict does not say which model it came from, and ``tf_mobilenetv3_large_100`` (Google's weights
ported: TF "SAME" padding, BN ε = 1e-3, inputs in [-1, 1]) has the same tensors as ``mobilenetv3_large_100``
(PyTorch padding, ε = 1e-5, ImageNet mean/std). The timm model name decides: given (``timm_model``), else found in
the file's path (timm's downloads are named after the model: ``tf_mobilenetv3_large_100-427764d5.pth``,
``.../timm/tf_mobilenetv3_large_100.in1k/model.safetensors``), else assumed to be timm's own PyTorch-trained model
of that shape, and the card says it was assumed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from mobilenets.errors import MobileNetsError
from mobilenets.models import FAMILIES
from mobilenets.models.mobilenet_v1 import BLOCKS
from mobilenets.models.mobilenet_v2 import BLOCKS as V2_BLOCKS
from mobilenets.models.mobilenet_v3 import SIZES as V3_SIZES
from mobilenets.models.mobilenet_v4 import RESOLUTIONS as V4_RESOLUTIONS
from mobilenets.models.mobilenet_v4 import SIZES as V4_SIZES
from mobilenets.weights.cards import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelCard,
    Preprocessing,
    class_names_for,
    fit_model_kwargs,
    width_mult_candidates,
)

TIMM_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
# The timm models whose every tensor has a place in ours → our family, from the families' declarations
# (``Family.importers["timm"]``: the V2 and V3 models).
TIMM_FAMILY = {name: family.name for family in FAMILIES.values() for name in family.importers.get("timm", ())}
TIMM_MODELS = tuple(sorted(TIMM_FAMILY))
TIMM_NAME = re.compile(
    r"(?<![a-z0-9])(?:(tf_)?mobilenetv([123])_(?:(large|small)_)?(minimal_)?(\d{3})(d?)"
    r"|mobilenetv4_(?:conv|hybrid)_(?:small|medium|large)(?:_\d{3})?)(?![0-9a-z])"
)
# timm's pretrained cfgs (timm/models/mobilenetv3.py): all crop 0.875 of a bicubic resize with ImageNet's mean/std,
# except the tf_ ports (bilinear, mean = std = 0.5) and mobilenetv3_large_075 (bilinear).
BILINEAR = ("mobilenetv3_large_075",)
# Our block parts for timm's: inverted residual ("ir": conv_pw expands, conv_pwl projects) and depthwise
# separable ("ds", the first block: conv_pw projects); V3's last 1×1 conv is timm's last stage ("cn").
SE_RENAMES = {"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
BLOCK_RENAMES = {
    "ir": {
        "conv_pw": "expand.conv",
        "bn1": "expand.bn",
        "conv_dw": "depthwise.conv",
        "bn2": "depthwise.bn",
        **SE_RENAMES,
        "conv_pwl": "project.conv",
        "bn3": "project.bn",
    },
    "ds": {
        "conv_dw": "depthwise.conv",
        "bn1": "depthwise.bn",
        **SE_RENAMES,
        "conv_pw": "project.conv",
        "bn2": "project.bn",
    },
    "cn": {"conv": "conv", "bn1": "bn"},
}
# MobileNetV4's blocks (timm's module names → ours): its plain convs ("cn" above), the fused IB ("er", timm's
# EdgeResidual), the UIB ("uir") and Mobile MQA ("mqa", timm's MobileAttention with MultiQueryAttention2d).
V4_BLOCK_RENAMES = {
    "cn": BLOCK_RENAMES["cn"],
    "er": {"conv_exp": "expand.conv", "bn1": "expand.bn", "conv_pwl": "project.conv", "bn2": "project.bn"},
    "uir": {
        "dw_start.conv": "start_depthwise.conv",
        "dw_start.bn": "start_depthwise.bn",
        "pw_exp.conv": "expand.conv",
        "pw_exp.bn": "expand.bn",
        "dw_mid.conv": "middle_depthwise.conv",
        "dw_mid.bn": "middle_depthwise.bn",
        "pw_proj.conv": "project.conv",
        "pw_proj.bn": "project.bn",
        "layer_scale": "layer_scale",
    },
    "mqa": {
        "norm": "norm",
        "attn.query.proj": "query",
        "attn.key.down_conv": "key.downsample.conv",
        "attn.key.norm": "key.downsample.bn",
        "attn.key.proj": "key.proj",
        "attn.value.down_conv": "value.downsample.conv",
        "attn.value.norm": "value.downsample.bn",
        "attn.value.proj": "value.proj",
        "attn.output.proj": "output",
        "layer_scale": "layer_scale",
    },
}
# Our V4 table rows → timm's block type.
V4_KIND = {
    "Conv": "cn",
    "FusedIB": "er",
    "MQA": "mqa",
    **{kind: "uir" for kind in ("ExtraDW", "IB", "ConvNext", "FFN")},
}


def is_timm_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    return "conv_stem.weight" in sd or is_timm_xception(sd)


def is_timm_xception(sd: Mapping[str, torch.Tensor]) -> bool:
    """timm's ``legacy_xception`` (Cadene's port of Keras's Xception): conv1/conv2, block1..12, conv3/conv4, fc."""
    return "block1.rep.0.conv1.weight" in sd and "conv4.pointwise.weight" in sd


def xception_to_ours(
    sd: Mapping[str, torch.Tensor], where: str, source: dict | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map timm's ``legacy_xception`` names to our Xception's.

    Both hold the same tensors in the same order (stem convs, then per block the shortcut's conv and BN before
    the separable convs' depthwise, pointwise and BN, then the two tail convs and the classifier), so tensors
    are paired in order within each part (stem, block i, tail, classifier), each pairing checked by the kind of
    tensor (weight, bias, BN statistic) and its shape.
    """
    from mobilenets.models.xception import Xception

    def part(key: str) -> str:
        m = re.match(r"(block\d+)\.", key)
        if m:
            return m.group(1)
        return {"conv1": "stem", "bn1": "stem", "conv2": "stem", "bn2": "stem", "fc": "classifier"}.get(
            key.split(".")[0], "tail"
        )

    def our_part(key: str) -> str:
        m = re.match(r"blocks\.(\d+)\.", key)
        return f"block{int(m.group(1)) + 1}" if m else key.split(".")[0]

    theirs = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if "fc.weight" not in theirs:
        raise MobileNetsError(f"{where} has no fc.weight: an incomplete timm legacy_xception state dict")
    num_classes = int(theirs["fc.weight"].shape[0])
    reference = {
        k: v for k, v in Xception(num_classes=num_classes).state_dict().items() if not k.endswith("num_batches_tracked")
    }
    groups: dict[str, list[str]] = {}
    for key in theirs:
        groups.setdefault(part(key), []).append(key)
    ours: dict[str, list[str]] = {}
    for key in reference:
        ours.setdefault(our_part(key), []).append(key)
    if sorted(groups) != sorted(ours) or any(len(groups[g]) != len(ours[g]) for g in ours):
        raise MobileNetsError(
            f"{where} is not timm's legacy_xception: its parts "
            f"({', '.join(f'{g}: {len(v)}' for g, v in sorted(groups.items())[:4])}, ...) do not match Xception's"
        )
    out: dict[str, torch.Tensor] = {}
    for g, keys in ours.items():
        for our_key, their_key in zip(keys, groups[g]):
            value = theirs[their_key]
            if our_key.rsplit(".", 1)[1] != their_key.rsplit(".", 1)[1] or value.shape != reference[our_key].shape:
                raise MobileNetsError(
                    f"{where}: {their_key} {tuple(value.shape)} does not fit our {our_key} "
                    f"{tuple(reference[our_key].shape)}: not timm's legacy_xception"
                )
            out[our_key] = value
    source = dict(source or {"format": "timm_state_dict"})
    source.update(timm_model="legacy_xception", timm_model_from="tensor names")
    source.setdefault("origin", "timm legacy_xception (huggingface/pytorch-image-models, Apache-2.0; Keras's weights)")
    card = ModelCard(
        arch="xception",
        model_kwargs=dict(resolution=299, num_classes=num_classes),
        # timm's cfg: 299 px, crop 0.8975, bicubic, mean = std = 0.5 (Keras's [-1, 1] inputs).
        preprocessing=Preprocessing(resolution=299, crop="resize_shorter", crop_pct=0.8975, interpolation="bicubic"),
        class_names=class_names_for(num_classes),
        source=source,
    )
    return out, card


def timm_name_in(text: str) -> str | None:
    """The last timm MobileNet model name in a path or string (``tf_mobilenetv3_large_100-427764d5.pth``)."""
    found = [m.group(0) for m in TIMM_NAME.finditer(text.lower())]
    return found[-1] if found else None


def timm_to_ours(
    sd: Mapping[str, torch.Tensor],
    where: str,
    source: dict | None = None,
    timm_model: str | None = None,
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map a timm MobileNetV1/V2/V3 state dict to our names and describe it in a card.

    Args:
        where: names the file in errors.
        source: the card's ``source`` (format, file, sha256).
        timm_model: the timm model name (``tf_mobilenetv3_large_100``): fixes padding, BN ε and preprocessing,
            and must fit the tensors. None: the name in ``source["file"]``/``where`` if any, else assumed.
    """
    source = dict(source or {"format": "timm_state_dict"})
    if is_timm_xception(sd):
        return xception_to_ours(sd, where, source)
    if "conv_head.weight" not in sd:
        return _v1_to_ours(sd, where, source)
    if "norm_head.weight" in sd:  # timm's V4 head: a 1×1 conv with BN on the pooled map (V3's has a bias, no BN)
        return _v4_to_ours(sd, where, source, timm_model)
    version = "mobilenet_v2" if "bn2.weight" in sd else "mobilenet_v3"
    tensors, blocks = _v23_tensors(sd, where, version)
    if version == "mobilenet_v2":
        arch, paper_last = "mobilenet_v2", V2_BLOCKS[-1][1]
    else:
        size = {len(rows): s for s, (rows, *_) in V3_SIZES.items()}.get(blocks)
        if size is None:
            raise MobileNetsError(
                f"{where} has {blocks} inverted residual blocks: not timm's mobilenetv3_large (15) or _small (11)"
            )
        minimal = not any(".se." in k for k in tensors)  # timm's minimal models: no squeeze-and-excite
        arch, paper_last = f"mobilenet_v3_{size}" + ("_minimal" if minimal else ""), V3_SIZES[size][0][-1][2]
    alphas = width_mult_candidates(tensors, f"blocks.{blocks - 1}.project.conv.weight", paper_last, where)
    num_classes = int(tensors["classifier.weight"].shape[0])
    # timm scales V3's expansions as TF-slim does, our default layout; "torchvision" is tried second. Last, a stem
    # kept 16 channels wide, as timm's for α < 0.75 (mobilenetv3_small_050; at α ≥ 0.75 the first fits).
    layouts = [{}] if arch == "mobilenet_v2" else [{}, {"layout": "torchvision"}, {"fixed_stem": True}]
    act = {"act": "relu6"} if arch == "mobilenet_v2" else {}
    candidates = [
        dict(width_mult=a, resolution=224, num_classes=num_classes, **act, **lay) for a in alphas for lay in layouts
    ]
    kwargs = fit_model_kwargs(arch, candidates, tensors, where, f"{arch} α={alphas[0]:g}")
    name, named_by = _timm_name(arch, kwargs["width_mult"], timm_model, [source.get("file", ""), where], where)
    tf_port = name.startswith("tf_")  # Google's weights ported: TF "SAME" padding and TF's BN ε
    kwargs.update(padding="tf_same" if tf_port else "symmetric", bn_eps=1e-3 if tf_port else 1e-5)
    source.update(timm_model=name, timm_model_from=named_by)
    source.setdefault("origin", f"timm {name} (huggingface/pytorch-image-models, Apache-2.0)")
    card = ModelCard(
        arch=arch,
        model_kwargs=kwargs,
        preprocessing=timm_preprocessing(name),
        class_names=class_names_for(kwargs["num_classes"]),
        source=source,
    )
    return tensors, card


def timm_preprocessing(name: str) -> Preprocessing:
    """The eval preprocessing of timm's pretrained cfg for a MobileNetV2/V3 name."""
    tf_port = name.startswith("tf_")
    return Preprocessing(
        crop="resize_shorter",
        crop_pct=0.875,
        interpolation="bilinear" if tf_port or name in BILINEAR else "bicubic",
        mean=INCEPTION_MEAN if tf_port else IMAGENET_MEAN,
        std=INCEPTION_STD if tf_port else IMAGENET_STD,
    )


def _timm_name(arch: str, width_mult: float, given: str | None, places: list[str], where: str) -> tuple[str, str]:
    """(timm model name, how it was found: "given", "file name" or "assumed"), checked against the tensors."""
    found = given.lower() if given else next((n for n in map(timm_name_in, places) if n), None)
    width = f"_{round(width_mult * 100):03d}"  # timm's names end in α × 100
    if arch.startswith("mobilenet_v4") and width == "_100":
        width = ""  # timm's V4 names at α = 1 have no width: mobilenetv4_conv_small
    if found is None:
        # The family's first name of this width (its declaration lists timm's own PyTorch training before the TF
        # ports), else its first name at this width.
        names = FAMILIES[arch].importers["timm"]
        fits = [n for n in names if n.endswith(width) and (width or not re.search(r"_\d{3}$", n))]
        return (fits[0] if fits else re.sub(r"_\d{3}$", "", names[0]) + width), "assumed"
    how = "given" if given else "file name"
    if found not in TIMM_FAMILY:
        raise MobileNetsError(
            f"{where}: timm's {found} ({how}) is not a model whose tensors all have a place here; "
            f"supported: {', '.join(TIMM_MODELS)}"
        )
    if TIMM_FAMILY[found] != arch or not found.endswith(width) or (not width and re.search(r"_\d{3}$", found)):
        fix = "pass --timm-model with the model it came from" if how == "file name" else "check --timm-model"
        raise MobileNetsError(
            f"{where}: the {how} says timm's {found}, but the tensors are {arch} α={width_mult:g}; {fix}"
        )
    return found, how


def _v23_tensors(sd: Mapping[str, torch.Tensor], where: str, version: str) -> tuple[dict[str, torch.Tensor], int]:
    """timm V2/V3 names → ours, and the number of inverted residual blocks; unknown names are refused."""
    out: dict[str, torch.Tensor] = {}
    blocks: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", key)
        if m:
            blocks.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = value
        elif key == "conv_stem.weight":
            out["stem.conv.weight"] = value
        elif key.startswith("bn1."):
            out[f"stem.bn.{key[4:]}"] = value
        elif key.startswith("classifier."):
            out[key] = value
        elif version == "mobilenet_v2" and key.startswith(("conv_head.", "bn2.")):
            out[key.replace("conv_head.", "head_conv.conv.").replace("bn2.", "head_conv.bn.")] = value
        elif version == "mobilenet_v3" and key in ("conv_head.weight", "conv_head.bias"):
            # timm's head is a 1×1 conv on the pooled 1×1 map; ours is the same as a Linear.
            out[key.replace("conv_head.", "head.")] = value.flatten(1) if value.ndim == 4 else value
        else:
            unknown.append(key)
    index = 0
    for (s, b), parts in sorted(blocks.items()):
        kind = "ir" if any(k.startswith("conv_pwl.") for k in parts) else "cn" if "conv.weight" in parts else "ds"
        ours = "last_conv" if kind == "cn" else f"blocks.{index}"
        for key, value in parts.items():
            module, _, fld = key.rpartition(".")
            if module not in BLOCK_RENAMES[kind]:
                unknown.append(f"blocks.{s}.{b}.{key}")
                continue
            out[f"{ours}.{BLOCK_RENAMES[kind][module]}.{fld}"] = value
        index += kind != "cn"
    if unknown:
        raise MobileNetsError(
            f"{where}: timm tensors {', '.join(unknown[:3])} have no counterpart in our {version} "
            f"(supported timm models: {', '.join(TIMM_MODELS)})"
        )
    if "classifier.weight" not in out:
        raise MobileNetsError(f"{where} has no classifier.weight: an incomplete timm state dict")
    return out, index


def _v1_to_ours(sd: Mapping[str, torch.Tensor], where: str, source: dict) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map timm's mobilenetv1 names (conv_stem/bn1, blocks.S.B.conv_dw/bn1/conv_pw/bn2, classifier) to ours.

    timm's MobileNetV1 uses ReLU6, BN ε = 1e-5, symmetric padding and mean = std = 0.5 (its model card).
    """
    out: dict[str, torch.Tensor] = {}
    blocks: dict[tuple[int, int], str] = {}
    unknown = []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(\w+)", key)
        if m:
            blocks[(int(m.group(1)), int(m.group(2)))] = ""
            continue
        if key == "conv_stem.weight":
            out["stem.conv.weight"] = value
        elif key.startswith("bn1.") and key[4:] in TIMM_BN_FIELDS:
            out[f"stem.bn.{key[4:]}"] = value
        elif key in ("classifier.weight", "classifier.bias"):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise MobileNetsError(
            f"{where}: timm tensors {', '.join(unknown[:3])} have no MobileNetV1 counterpart (only "
            "mobilenetv1_100/_125-style models without a head conv can be imported)"
        )
    order = sorted(blocks)
    if len(order) != len(BLOCKS):
        raise MobileNetsError(f"{where} has {len(order)} depthwise separable blocks, MobileNetV1 has {len(BLOCKS)}")
    renames = {
        "conv_dw.": "depthwise.conv.",
        "bn1.": "depthwise.bn.",
        "conv_pw.": "pointwise.conv.",
        "bn2.": "pointwise.bn.",
    }
    for i, (s, b) in enumerate(order):
        for theirs, ours in renames.items():
            for fld in ("weight",) if theirs.startswith("conv") else TIMM_BN_FIELDS:
                key = f"blocks.{s}.{b}.{theirs}{fld}"
                if key not in sd:
                    raise MobileNetsError(f"{where} has no tensor {key}: incomplete timm state dict")
                out[f"blocks.{i}.{ours}{fld}"] = sd[key]
    if "classifier.weight" not in out or "stem.conv.weight" not in out:
        raise MobileNetsError(f"{where} lacks conv_stem.weight or classifier.weight: incomplete timm state dict")
    width_mult = out["classifier.weight"].shape[1] / BLOCKS[-1][0]
    num_classes = out["classifier.weight"].shape[0]
    card = ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(
            width_mult=width_mult,
            resolution=224,
            num_classes=num_classes,
            act="relu6",
            padding="symmetric",
            bn_eps=1e-5,
        ),
        preprocessing=Preprocessing(crop="resize_shorter", crop_pct=0.875, interpolation="bicubic"),
        class_names=class_names_for(num_classes, background=False),
        source=source or {"format": "timm_state_dict"},
    )
    return out, card


def _v4_blocks(sd: Mapping[str, torch.Tensor]) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    blocks: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", key)
        if m and not key.endswith("num_batches_tracked"):
            blocks.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = value
    return dict(sorted(blocks.items()))


def _v4_kind(parts: Mapping[str, torch.Tensor]) -> str:
    """timm's V4 block type from its tensor names."""
    if any(k.startswith("attn.") for k in parts):
        return "mqa"
    if any(k.startswith("pw_exp.") for k in parts):
        return "uir"
    return "er" if "conv_exp.weight" in parts else "cn"


def _v4_to_ours(
    sd: Mapping[str, torch.Tensor], where: str, source: dict, timm_model: str | None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Map a timm ``mobilenetv4_*`` state dict to our MobileNetV4's names; the size is the one whose table has the
    file's sequence of block types (Conv-M and Hybrid-M differ in their MQA blocks, Conv-S starts with plain convs)."""
    blocks = _v4_blocks(sd)
    kinds = [_v4_kind(parts) for parts in blocks.values()]
    sizes = [s for s, size in V4_SIZES.items() if [V4_KIND[row.kind] for row in size.blocks] == kinds]
    if not sizes:
        raise MobileNetsError(
            f"{where} has {len(kinds)} blocks ({', '.join(dict.fromkeys(kinds))}) in an order no MobileNetV4 has: not "
            f"one of timm's {', '.join(n for n in TIMM_MODELS if n.startswith('mobilenetv4'))}"
        )
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked") or key.startswith("blocks."):
            continue
        if key == "conv_stem.weight":
            out["stem.conv.weight"] = value
        elif key.startswith("bn1."):
            out[f"stem.bn.{key[4:]}"] = value
        elif key == "conv_head.weight":
            out["head.conv.weight"] = value
        elif key.startswith("norm_head."):
            out[f"head.bn.{key[10:]}"] = value
        elif key.startswith("classifier."):
            out[key] = value
        else:
            unknown.append(key)
    for index, ((s, b), parts) in enumerate(blocks.items()):
        renames = V4_BLOCK_RENAMES[kinds[index]]
        for key, value in parts.items():
            module, _, fld = key.rpartition(".")
            if module not in renames:
                unknown.append(f"blocks.{s}.{b}.{key}")
                continue
            out[f"blocks.{index}.{renames[module]}.{fld}"] = value
    if unknown:
        raise MobileNetsError(f"{where}: timm tensors {', '.join(unknown[:3])} have no counterpart in our MobileNetV4")
    if "classifier.weight" not in out:
        raise MobileNetsError(f"{where} has no classifier.weight: an incomplete timm state dict")
    arch = f"mobilenet_v4_{sizes[0]}"
    last = V4_SIZES[sizes[0]].blocks[-1].out  # the 1×1 conv to 960
    alphas = width_mult_candidates(out, f"blocks.{len(kinds) - 1}.conv.weight", last, where)
    num_classes = int(out["classifier.weight"].shape[0])
    resolution = V4_RESOLUTIONS[sizes[0]]
    candidates = [dict(width_mult=a, resolution=resolution, num_classes=num_classes) for a in alphas]
    kwargs = fit_model_kwargs(arch, candidates, out, where, f"{arch} α={alphas[0]:g}")
    name, named_by = _timm_name(arch, kwargs["width_mult"], timm_model, [source.get("file", ""), where], where)
    kwargs.update(padding="symmetric", bn_eps=1e-5)
    source.update(timm_model=name, timm_model_from=named_by)
    source.setdefault("origin", f"timm {name} (huggingface/pytorch-image-models, Apache-2.0)")
    # timm's V4 cfgs: bicubic, crop 0.95 at the training size for most tags (ImageNet mean/std; a few small ones
    # use 0.5/0.5 and 0.875: the tag, which a state dict does not carry, decides).
    card = ModelCard(
        arch=arch,
        model_kwargs=kwargs,
        preprocessing=Preprocessing(
            resolution=resolution,
            crop="resize_shorter",
            crop_pct=0.95,
            interpolation="bicubic",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ),
        class_names=class_names_for(num_classes),
        source=source,
    )
    return out, card
