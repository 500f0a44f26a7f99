"""What every benchmark reads: the aligned evaluation folder, and features from the cache.

Layout written by the align stage (``data/aligned/eval``):

- ``<name>.bin``: insightface pair sets (LFW, CFP-FP, AgeDB-30, …);
- ``sets/<name>.rec|.idx|.names``: aligned image sets looked up by protocol name;
- ``protocols/<name>/…``: the protocol files of those sets (IJB meta, MegaFace lists, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.distributed as torch_dist

from arcflow.data.binpairs import PairSet, load_bin
from arcflow.data.imageset import ImageSet
from arcflow.errors import DataFormatError
from arcflow.evaluate.cache import FeatureCache
from arcflow.evaluate.embed import (
    Encoder,
    Features,
    distinct_images,
    embed_images,
    file_digest,
)
from arcflow.evaluate.sharded import embed_sharded
from arcflow.train.distributed import DistContext


@dataclass
class EvalContext:
    """The evaluation folder, the encoder and how to embed (batch, flip, cache)."""

    root: Path
    encoder: Encoder
    batch_size: int = 128
    flip: bool = True
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    device: str = "cpu"  # where scoring runs (MegaFace, Trillion-Pairs)
    dist: DistContext = field(default_factory=DistContext)  # torchrun ranks share embedding
    embedded: int = 0  # images embedded in this run (cache misses), for the report
    cached: int = 0  # images whose features came from the cache

    def protocol(self, name: str, *parts: str) -> Path:
        """``protocols/<name>/<parts…>`` under the evaluation folder."""
        return self.root.joinpath("protocols", name, *parts)

    def pair_set(self, name: str) -> tuple[PairSet, Features]:
        """The pair set ``<name>.bin`` and the features of its 2N images (each distinct
        image embedded once)."""
        path = self.root / f"{name}.bin"
        pairs = load_bin(path)
        distinct, rows = distinct_images(pairs.images)
        features = self._features(
            path, lambda a, b: distinct[a:b], len(distinct), name, [path], variant="distinct"
        )
        return pairs, features.take(rows)

    def image_set(self, name: str) -> tuple[list[str], Features]:
        """The names and features of the aligned image set ``sets/<name>``."""
        prefix = self.root / "sets" / name
        with ImageSet(prefix) as images:
            files = [prefix.with_name(prefix.name + ext) for ext in (".rec", ".names")]
            features = self._features(
                prefix,
                lambda a, b: [images.crop_at(i) for i in range(a, b)],
                len(images),
                name,
                files,
            )
            return list(images.names), features

    def _features(
        self, where: Path, read, count: int, desc: str, files: list[Path], variant: str = ""
    ) -> Features:
        data_key = "-".join([file_digest(f)[:16] for f in files] + ([variant] if variant else []))
        key = (self.encoder.key, data_key, self.flip)
        if self.dist.distributed and not self._cached_everywhere(key):
            features = embed_sharded(
                self.encoder, read, count, self.dist,
                batch_size=self.batch_size, flip=self.flip, desc=desc,
            )  # fmt: skip
            if self.dist.is_main:
                self.cache.put(*key, features)
            hit = False
        else:

            def compute() -> Features:
                return embed_images(
                    self.encoder, read, count,
                    batch_size=self.batch_size, flip=self.flip, desc=desc,
                )  # fmt: skip

            features, hit = self.cache.get_or_compute(*key, compute)
        if len(features) != count:
            raise DataFormatError(f"{where}: {count} images but {len(features)} cached features")
        if hit:
            self.cached += count
        else:
            self.embedded += count
        return features

    def _cached_everywhere(self, key: tuple[str, str, bool]) -> bool:
        """Whether the main rank has ``key`` cached (its answer, broadcast to every rank)."""
        answer = [self.cache.has(*key) if self.dist.is_main else False]
        torch_dist.broadcast_object_list(answer, src=0)
        return bool(answer[0])

    def prefetch(self, kind: str, name: str) -> None:
        """Embed (and cache) a pair set (``kind="pairs"``) or image set (``"set"``)."""
        if kind == "pairs":
            self.pair_set(name)
        else:
            self.image_set(name)


def rows_of(names: list[str], wanted: np.ndarray | list[str], where: str) -> np.ndarray:
    """Row index in ``names`` of every ``wanted`` name; a missing one is an error naming it."""
    position = {name: i for i, name in enumerate(names)}
    rows = np.fromiter((position.get(str(n), -1) for n in wanted), dtype=np.int64)
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        first = str(np.asarray(wanted)[missing[0]])
        raise DataFormatError(
            f"{where}: {missing.size} protocol images have no aligned crop, e.g. {first!r}",
            hint="re-run the align stage on the complete release",
        )
    return rows
