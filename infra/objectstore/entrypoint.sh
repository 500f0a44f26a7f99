#!/bin/sh
# SeaweedFS for the ArcFlow stack: master, volume server, filer and S3 gateway in one
# process (`weed server`). Its one S3 identity is written at start from S3_ACCESS_KEY and
# S3_SECRET_KEY, so the credentials live only in infra/.env, never in a committed file.
set -eu

: "${S3_ACCESS_KEY:?S3_ACCESS_KEY is not set (infra/.env)}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY is not set (infra/.env)}"
data_dir="${SEAWEEDFS_DATA_DIR:-/data}"
config="${SEAWEEDFS_S3_CONFIG:-/tmp/seaweedfs-s3.json}"

# The keys go into JSON as they are: accept only characters that need no escaping there.
for key in "$S3_ACCESS_KEY" "$S3_SECRET_KEY"; do
  case "$key" in
    *[!A-Za-z0-9+/=._-]*)
      echo "objectstore: S3_ACCESS_KEY and S3_SECRET_KEY may hold only letters, digits and + / = . _ -" >&2
      exit 64
      ;;
  esac
done

umask 077
cat > "$config" <<EOF
{
  "identities": [
    {
      "name": "arcflow",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF

# The filer keeps its metadata (leveldb) relative to the working directory: keep it on the volume.
cd "$data_dir"
exec weed server \
  -dir="$data_dir" \
  -ip.bind=0.0.0.0 \
  -volume.max=0 \
  -master.volumeSizeLimitMB=1024 \
  -s3 \
  -s3.port=8333 \
  -s3.config="$config" \
  "$@"
