#!/bin/sh
# Serves FACE_MODEL_URI (default models:/arcface@champion) with `mlflow models serve` on
# 0.0.0.0:8080 once the registry can resolve it: a fresh stack has no champion until the
# first `arcflow promote`, so the service waits (and says so) instead of crash-looping.
# A restart picks up a new champion. Environment: MLFLOW_TRACKING_URI, FACE_MODEL_URI,
# FACE_API_WORKERS (default 2), FACE_API_WAIT_SECONDS (between checks, default 30).
set -eu

model="${FACE_MODEL_URI:-models:/arcface@champion}"
wait_seconds="${FACE_API_WAIT_SECONDS:-30}"

until python - "$model" <<'PY'
import sys

import mlflow
from mlflow.exceptions import MlflowException

uri = sys.argv[1]
try:
    mlflow.models.get_model_info(uri)
except (MlflowException, OSError) as exc:
    print(f"face-api: {uri} is not available yet ({str(exc).splitlines()[0][:200]})", file=sys.stderr)
    sys.exit(1)
PY
do
    echo "face-api: waiting ${wait_seconds}s for ${model} (promote a model: arcflow promote)" >&2
    sleep "$wait_seconds"
done

echo "face-api: serving ${model}" >&2
exec mlflow models serve -m "$model" --env-manager local \
    -h 0.0.0.0 -p 8080 -w "${FACE_API_WORKERS:-2}"
