"""Aligned face crops from an insightface train.rec as a torch Dataset."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import torch
from torch.utils.data import Dataset

from arcflow.data.face_records import FaceRecordDataset
from arcflow.data.transforms import decode_rgb, to_tensor


class AlignedFaceDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(CHW float tensor in [-1, 1], label)`` items; optional albumentations on RGB uint8."""

    def __init__(self, rec_dir: str | Path, augment: A.Compose | None = None) -> None:
        self.records = FaceRecordDataset(rec_dir)
        self.augment = augment

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
        label, jpeg = self.records[i]
        rgb = decode_rgb(jpeg, where=f"{self.records.rec_dir}/train.rec image {i}")
        if self.augment is not None:
            rgb = self.augment(image=rgb)["image"]
        return to_tensor(rgb), label
