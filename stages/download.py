"""Stage download: fetch one dataset source into data/raw/<name>/.

Sources come from ``data.sources`` in params.yaml: https/http, s3 (object or prefix), a local
path, or ``synthetic://synthface`` — the embedded dataset, generated deterministically with
no network in real release formats. Downloads are verified, resumed and retried.
"""

from __future__ import annotations

from pathlib import Path

from arcflow.atomic import atomic_dir
from arcflow.config import DataParams, SynthFaceParams
from arcflow.data.sources import ExtractLimits, RetryPolicy, S3Options, Source, fetch
from arcflow.data.synthface_release import write_release
from arcflow.errors import ConfigError
from stages.common import log, params, parser, run


def download(name: str, data: DataParams, out: Path) -> None:
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
        return
    fetched = fetch(
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
    log.info("download: %s (%s) -> %s", name, source.uri, fetched)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--source", required=True, help="name of a source in data.sources")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    args = p.parse_args()
    download(args.source, params(args, "data").data, args.out)


if __name__ == "__main__":
    run(main)
