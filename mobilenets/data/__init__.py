"""Datasets for training and evaluation: Fashion-MNIST (IDX), scikit-learn's digits, CIFAR, any ImageFolder.

Every dataset yields **uint8 image batches** of shape (N, C, H, W) and int64 labels. Resizing to the
model's resolution, augmentation and normalization happen on whole batches (:func:`prepare_batch`),
on the CPU or the GPU, with random numbers drawn from a generator seeded by (seed, epoch, step). That
keeps the data path fast for small in-memory sets (no per-image Python work) and makes a resumed or
distributed run see exactly the same pixels as an uninterrupted single-process one.

One file per part: classification (the datasets and their loaders), transforms (epoch order, seeded
augmentation, resizing, normalization), jpeg (batched JPEG ImageFolder decoding and crops: nvJPEG on a GPU,
threads on a CPU; ``from mobilenets.data.jpeg import JpegLoader``), samples (folders of real photos
written on the spot for the walk-through, tests and benchmarks), and for detectors detection (COCO, VOC and YOLO
sets, their bad cases, SSD's seeded v2 augmentation: ``from mobilenets.data.detection import
load_detection_dataset``) and composite (the offline detection set: Fashion-MNIST objects on real photos).
"""

from mobilenets.data.classification import (
    BUILTIN,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_STATS,
    IMAGE_EXTENSIONS,
    IMAGENET_STATS,
    SPLITS,
    ArrayDataset,
    BadFiles,
    ImageFolderDataset,
    balanced_subset,
    check_classes_present,
    collate_skip_bad,
    fashion_mnist_dir,
    is_cifar_dir,
    load_cifar,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)
from mobilenets.data.samples import SAMPLE_PHOTO_CLASSES, sample_photo_folder, source_photos, write_photo_folder
from mobilenets.data.transforms import (
    AUGMENT_RANDOMS,
    Augment,
    augment_rand,
    epoch_order,
    match_channels,
    prepare_batch,
    step_generator,
)

__all__ = [
    "AUGMENT_RANDOMS",
    "BUILTIN",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_STATS",
    "IMAGENET_STATS",
    "IMAGE_EXTENSIONS",
    "SAMPLE_PHOTO_CLASSES",
    "SPLITS",
    "ArrayDataset",
    "Augment",
    "BadFiles",
    "ImageFolderDataset",
    "augment_rand",
    "balanced_subset",
    "check_classes_present",
    "collate_skip_bad",
    "epoch_order",
    "fashion_mnist_dir",
    "is_cifar_dir",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "match_channels",
    "prepare_batch",
    "read_idx",
    "sample_photo_folder",
    "source_photos",
    "step_generator",
    "write_photo_folder",
]
