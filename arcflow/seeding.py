"""Seeds derived from several values, the same in every process and Python version."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (e.g. a base seed, an epoch, an index or a purpose string).

    Built on blake2b of their ``repr``, so it does not depend on PYTHONHASHSEED.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
