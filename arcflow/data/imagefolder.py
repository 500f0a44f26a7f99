"""Image-folder datasets (CASIA-WebFace / VGGFace2 style): ``<root>/<identity>/<image>``.

Labels are stable: identities sorted by name (Python string order) get 0..C-1, images within
an identity are sorted by name, so the index never depends on file-system listing order.
Hidden entries (names starting with ".") and identity folders without images are skipped and
counted. A saved label map (TSV lines ``"<label>\\t<identity>"``, no header, label order) lets
a later scan keep every existing label and append identities it has not seen, in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arcflow.atomic import atomic_file
from arcflow.data.protocols.text import read_text
from arcflow.errors import DataFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class ImageFolderIndex:
    """Images (relative posix paths ``identity/file``), their labels and the label names.

    ``classes[label]`` is the identity of ``label``; with a reused label map it can name an
    identity that has no images in this folder.
    """

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    skipped_hidden: int = 0  # hidden files and folders
    skipped_empty: int = 0  # identity folders without a single image
    skipped_other: int = 0  # non-image files, nested folders, files directly under root

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def label_map(self) -> dict[str, int]:
        """Identity -> label."""
        return {name: label for label, name in enumerate(self.classes)}

    def absolute(self, i: int) -> Path:
        """Full path of image ``i``."""
        return self.root / self.paths[i]


def _check_label_map(label_map: Mapping[str, int]) -> None:
    labels = sorted(label_map.values())
    if labels != list(range(len(labels))):
        raise ValueError("label map labels must be exactly 0..C-1, each once")


def extend_label_map(existing: Mapping[str, int], classes: Iterable[str]) -> dict[str, int]:
    """``existing`` plus every identity of ``classes`` it lacks, appended in sorted order."""
    _check_label_map(existing)
    result = dict(existing)
    for name in sorted(set(classes) - set(existing)):
        result[name] = len(result)
    return result


def scan_image_folder(
    root: str | Path,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    label_map: Mapping[str, int] | None = None,
) -> ImageFolderIndex:
    """Index ``<root>/<identity>/<image>``; ``label_map`` (e.g. a saved one) is kept and extended.

    Extensions match case-insensitively. Raises DataFormatError if ``root`` is not a folder
    or holds no image at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder")
    wanted = tuple(ext.lower() for ext in extensions)
    hidden = empty = other = 0
    found: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            hidden += 1
            continue
        if not entry.is_dir():
            other += 1
            continue
        images = []
        for item in sorted(entry.iterdir(), key=lambda p: p.name):
            if item.name.startswith("."):
                hidden += 1
            elif item.is_file() and item.suffix.lower() in wanted:
                images.append(item.name)
            else:
                other += 1
        if images:
            found[entry.name] = images
        else:
            empty += 1
    if not found:
        raise DataFormatError(f"{root}: no images under <root>/<identity>/ ({', '.join(wanted)})")
    mapping = extend_label_map(label_map or {}, found)
    classes = tuple(sorted(mapping, key=mapping.__getitem__))
    paths: list[str] = []
    labels: list[int] = []
    for name in sorted(found):
        paths += [f"{name}/{image}" for image in found[name]]
        labels += [mapping[name]] * len(found[name])
    return ImageFolderIndex(root, tuple(paths), tuple(labels), classes, hidden, empty, other)


def write_label_map(path: str | Path, label_map: Mapping[str, int]) -> None:
    """Write ``"<label>\\t<identity>"`` lines in label order, atomically."""
    _check_label_map(label_map)
    for name in label_map:
        if not name or any(ch in name for ch in "\t\r\n"):
            raise ValueError(f"identity {name!r} cannot be written to a TSV line")
    ordered = sorted(label_map.items(), key=lambda item: item[1])
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"{label}\t{name}\n" for name, label in ordered), encoding="utf-8")


def read_label_map(path: str | Path) -> dict[str, int]:
    """Parse a label map written by :func:`write_label_map` (identity -> label)."""
    path = Path(path)
    lines = read_text(path).splitlines()
    result: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1]:
            raise DataFormatError(f"{path}:{lineno}: expected '<label>\\t<identity>', got {line!r}")
        if fields[0] != str(lineno - 1):
            raise DataFormatError(
                f"{path}:{lineno}: expected label {lineno - 1}, got {fields[0]!r}"
            )
        if fields[1] in result:
            raise DataFormatError(f"{path}:{lineno}: identity {fields[1]!r} listed twice")
        result[fields[1]] = lineno - 1
    return result
