"""Stage download: fetch one dataset source into data/raw/<name>/.

Sources come from ``data.sources`` in params.yaml: https/http, s3 (object or prefix), a local
path, or ``synthetic://synthface`` — the embedded dataset, generated deterministically with
no network in real release formats. Downloads are verified, resumed and retried.

``--report`` receives what vouches for the bytes (``reports/download/<name>.json``): the
checksum that matched, or ``UNVERIFIED`` with the reason and the sha256 to pin.
"""

from __future__ import annotations

from pathlib import Path

from arcflow.atomic import atomic_dir, write_json
from arcflow.config import DataParams, SynthFaceParams
from arcflow.data.sources import (
    ExtractLimits,
    Fetched,
    RetryPolicy,
    S3Options,
    Source,
    fetch_checked,
)
from arcflow.data.synthface_release import write_release
from arcflow.errors import ConfigError
from stages.common import log, params, parser, run


def download(name: str, data: DataParams, out: Path) -> Fetched:
    """Fetch (or generate) source ``name`` into the directory ``out``."""
    if name not in data.sources:
        raise ConfigError(
            f"params.yaml: data.sources has no source '{name}'; "
            f"available: {', '.join(data.sources) or 'none'}"
        )
    source = data.sources[name]
    if source.synthetic:
        with atomic_dir(out) as tmp:
            counts = write_release(source.options or SynthFaceParams(), tmp)
        log.info("download: generated %s %s -> %s", name, counts, out)
        return Fetched(out, "synthetic")
    fetched = fetch_checked(
        Source(
            name=out.name,
            uri=source.uri,
            sha256=source.sha256,
            md5=source.md5,
            extract=source.extract,
        ),
        out.parent,
        s3=S3Options(**data.s3.model_dump()),
        retry=RetryPolicy(**data.retry.model_dump()),
        limits=ExtractLimits(**data.extract_limits.model_dump()),
    )
    log.info("download: %s (%s) -> %s: %s", name, source.uri, fetched.path, fetched.status())
    return fetched


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--source", required=True, help="name of a source in data.sources")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p.add_argument("--report", type=Path, help="JSON: what vouches for the bytes")
    args = p.parse_args()
    data = params(args, "data").data
    fetched = download(args.source, data, args.out)
    if args.report is not None:
        write_json(args.report, fetched.report(args.source, data.sources[args.source].uri))


if __name__ == "__main__":
    run(main)
