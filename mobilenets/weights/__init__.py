"""Pretrained weights: import them from TF-slim, timm and torchvision, save and load ours with a model card.

One module per source, each mapping names and checking every shape; all give our state dict plus a
:class:`ModelCard` (the family and options that rebuild the network, the preprocessing, the class names, where
the numbers came from):

* ``tf_graph``: Google's TF-slim MobileNetV1 frozen graphs ``.pb``, any α, without TensorFlow.
* ``timm``: timm state dicts of ``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_*`` and ``tf_mobilenetv3_*``.
* ``torchvision``: torchvision ``mobilenet_v2``, ``mobilenet_v3_large``/``_small`` state dicts, any width_mult.
* ``cards``: the card, our ``.safetensors`` (card in the header, a ``.json`` copy beside), atomic writes.
* ``load``: any file → model (:func:`load_weights`) or → our file (:func:`import_weights`).
* ``pretrained``: Google's ImageNet MobileNetV1 1.0/224, found offline and cached (:func:`pretrained_model`).
"""

from mobilenets.weights.cards import (
    CARD_FORMAT,
    CARD_METADATA_KEY,
    ModelCard,
    Preprocessing,
    build_model,
    card_path,
    check_state_dict,
    imagenet_class_names,
    read_safetensors,
    read_state_dict,
    read_torch_file,
    save_weights,
    sha256_file,
    state_dict_from,
)
from mobilenets.weights.load import convert_state_dict, detect_source, import_weights, load_weights, read_weights
from mobilenets.weights.pretrained import (
    GET_PRETRAINED,
    PRETRAINED_CACHE_NAME,
    PRETRAINED_PACKAGE,
    cache_dir,
    find_pretrained_graph,
    pretrained_model,
    pretrained_weights_path,
)
from mobilenets.weights.tf_graph import TFGraph, import_tf_graph, read_tf_graph
from mobilenets.weights.timm import TIMM_MODELS, timm_preprocessing, timm_to_ours
from mobilenets.weights.torchvision import torchvision_to_ours

__all__ = [
    "CARD_FORMAT",
    "CARD_METADATA_KEY",
    "GET_PRETRAINED",
    "PRETRAINED_CACHE_NAME",
    "PRETRAINED_PACKAGE",
    "TIMM_MODELS",
    "ModelCard",
    "Preprocessing",
    "TFGraph",
    "build_model",
    "cache_dir",
    "card_path",
    "check_state_dict",
    "convert_state_dict",
    "detect_source",
    "find_pretrained_graph",
    "imagenet_class_names",
    "import_tf_graph",
    "import_weights",
    "load_weights",
    "pretrained_model",
    "pretrained_weights_path",
    "read_safetensors",
    "read_state_dict",
    "read_tf_graph",
    "read_torch_file",
    "read_weights",
    "save_weights",
    "sha256_file",
    "state_dict_from",
    "timm_preprocessing",
    "timm_to_ours",
    "torchvision_to_ours",
]
