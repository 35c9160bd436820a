"""Datasets: ``load_dataset(name_or_path, split=..., limit=..., seed=...)``.

Registered: ``easy-vqa`` and ``easy-ve`` (offline, bundled), ``vqa-v2`` and
``snli-ve`` (official files on disk).
"""

from robustmm.data.dataset import Dataset, list_datasets, load_dataset, register_dataset
from robustmm.data import easy_vqa, easy_ve, vqa_v2, snli_ve  # noqa: F401  (register the loaders)
from robustmm.data.images import open_image, to_tensor

__all__ = ["Dataset", "load_dataset", "list_datasets", "register_dataset", "open_image", "to_tensor"]
