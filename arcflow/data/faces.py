"""Aligned face crops from an insightface train.rec as a torch Dataset."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from arcflow.data.face_records import FaceRecordDataset
from arcflow.data.transforms import decode_rgb, to_tensor
from arcflow.imageio import image_header


class AlignedFaceDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(CHW float tensor in [-1, 1], label)`` items; optional albumentations on RGB uint8."""

    def __init__(self, rec_dir: str | Path, augment: A.Compose | None = None) -> None:
        self.records = FaceRecordDataset(rec_dir)
        self.augment = augment
        self.decoded: np.ndarray | None = None  # every crop, decoded once (:meth:`preload`)
        self.decoded_labels: list[int] = []

    def preload(self, max_bytes: int) -> bool:
        """Decode every crop once into memory when they all fit in ``max_bytes`` (N x H x W x
        3 from the first crop's header, checked before decoding); items then skip the decode,
        which otherwise runs again every epoch. The pixels are the same either way. Returns
        whether the set was loaded; a crop of another size leaves it not loaded."""
        n = len(self)
        if n == 0 or max_bytes <= 0:
            return False
        width, height, _ = image_header(
            self.records[0][1], f"{self.records.rec_dir}/train.rec image 0", complete=False
        )
        if n * width * height * 3 > max_bytes:
            return False
        items = [self.records[i] for i in range(n)]  # sequential reads of train.rec
        where = f"{self.records.rec_dir}/train.rec image"
        decoded = np.empty((n, height, width, 3), np.uint8)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # cv2 drops the GIL
            crops = pool.map(lambda item: decode_rgb(item[1], where=f"{where} {item[0]}"),
                             enumerate(jpeg for _, jpeg in items))  # fmt: skip
            for i, rgb in enumerate(crops):
                if rgb.shape != decoded.shape[1:]:
                    return False
                decoded[i] = rgb
        self.decoded, self.decoded_labels = decoded, [label for label, _ in items]
        return True

    @property
    def num_classes(self) -> int:
        return self.records.num_classes

    @property
    def labels(self) -> list[int]:
        """The label of every image, in dataset order (read from the index, no decoding)."""
        return self.records.index.labels.tolist()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.decoded is not None:
            # a copy: an augmentation working in place must not change the cached crop
            label, rgb = self.decoded_labels[i], self.decoded[i].copy()
        else:
            label, jpeg = self.records[i]
            rgb = decode_rgb(jpeg, where=f"{self.records.rec_dir}/train.rec image {i}")
        if self.augment is not None:
            rgb = self.augment(image=rgb)["image"]
        return to_tensor(rgb), label
