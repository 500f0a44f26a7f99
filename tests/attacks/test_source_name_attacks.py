"""Attack: source URIs whose last part cannot be a file name here (a URL ending ``%00``, a
300-character name, S3 keys ending ``/.`` or ``/..``). Each is one SourceError naming the URI,
raised before anything is fetched or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcflow.data.sources import RetryPolicy, Source, fetch
from arcflow.errors import SourceError

pytestmark = [pytest.mark.attack, pytest.mark.unit]

NO_NETWORK = RetryPolicy(attempts=1, backoff_s=0.0, timeout_s=0.5)
ATTACKS = {
    "url ending %00": ("http://127.0.0.1:9/data.bin%00", "NUL or control character"),
    "url with a newline": ("http://127.0.0.1:9/data%0A.bin", "NUL or control character"),
    "300-character name": ("http://127.0.0.1:9/" + "a" * 300 + ".bin", "more than a file name"),
    "s3 key ending /.": ("s3://bucket/data/.", "'.' is not a file name"),
    "s3 key ending /..": ("s3://bucket/data/..", "'..' is not a file name"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_unusable_names_are_refused_before_fetching(attack: str, tmp_path: Path) -> None:
    uri, problem = ATTACKS[attack]
    with pytest.raises(SourceError) as err:
        fetch(Source("raw", uri), tmp_path, retry=NO_NETWORK)
    message = str(err.value)
    assert problem in message and "\n" not in message and "cannot store it" in message
    assert list(tmp_path.iterdir()) == []  # no staging folder, no partial file
