"""What an alignment pass did: counts, centre-crop fallbacks, failures by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from arcflow.errors import DataFormatError


@dataclass
class AlignReport:
    """Counts of one aligned set; ``failures`` holds ``(reason, message)`` in input order.

    ``centre_crops`` counts images of an evaluation set that had no usable face and were
    centre-cropped instead (they are included in ``aligned``).
    """

    total: int = 0
    aligned: int = 0
    centre_crops: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, message: str, reason: str) -> None:
        """Record one image that could not be aligned, and why."""
        self.failures.append((reason, message))

    def add(self, other: AlignReport) -> None:
        """Fold in the report of a later part (a shard) of the same set."""
        self.total += other.total
        self.aligned += other.aligned
        self.centre_crops += other.centre_crops
        self.failures.extend(other.failures)

    @property
    def failed(self) -> list[str]:
        """The failure messages, in order."""
        return [message for _, message in self.failures]

    def failure_lines(self) -> list[str]:
        """``reason<TAB>message`` per failed image (the stage's failure report)."""
        return [f"{reason}\t{message}" for reason, message in self.failures]

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "aligned": self.aligned,
            "centre_crops": self.centre_crops,
            "failed": len(self.failures),
            "failed_by_reason": dict(sorted(Counter(r for r, _ in self.failures).items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object], failures: list[tuple[str, str]]) -> AlignReport:
        return cls(
            total=int(data["total"]),  # type: ignore[arg-type]
            aligned=int(data["aligned"]),  # type: ignore[arg-type]
            centre_crops=int(data["centre_crops"]),  # type: ignore[arg-type]
            failures=list(failures),
        )

    def check(self, max_bad_fraction: float, where: object, rule: str = "") -> None:
        """Raise if more than ``max_bad_fraction`` of the images could not be aligned.

        ``rule`` says what was violated (default: the ``align.max_bad_fraction`` setting).
        """
        if self.total and len(self.failures) / self.total > max_bad_fraction:
            rule = rule or f"more than align.max_bad_fraction={max_bad_fraction}"
            raise DataFormatError(
                f"{where}: {len(self.failures)} of {self.total} images could not be aligned "
                f"({rule}); first: {self.failures[0][1]}"
            )
