#!/bin/sh
# One-shot job of the compose stack: creates each bucket in BUCKETS (space-separated) unless
# it exists. The S3 gateway can pass its health check a moment before the filer accepts
# writes, so every bucket is retried for a while. Uses AWS_ENDPOINT_URL and the AWS_* keys.
set -eu

: "${BUCKETS:?BUCKETS is not set}"
attempts="${CREATE_BUCKETS_ATTEMPTS:-30}"
delay="${CREATE_BUCKETS_DELAY_S:-2}"

for bucket in $BUCKETS; do
  attempt=1
  until aws s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 \
      || aws s3api create-bucket --bucket "$bucket" >/dev/null; do
    if [ "$attempt" -ge "$attempts" ]; then
      echo "create-buckets: could not create $bucket after $attempts attempts" >&2
      exit 1
    fi
    attempt=$((attempt + 1))
    sleep "$delay"
  done
  echo "create-buckets: s3://$bucket ready"
done
