# MLflow tracking server of infra/docker-compose.yml: MLflow (with its basic-auth app) and the Postgres driver
# (psycopg2) and boto3 for the S3 artifact store, installed at build time rather than at
# every container start. Build context: infra/.
FROM python:3.11.14-slim-bookworm

ARG MLFLOW_VERSION=3.17.2

RUN python -m pip install --no-cache-dir --disable-pip-version-check \
        "mlflow[auth]==${MLFLOW_VERSION}" \
        "psycopg2-binary==2.9.13" \
        "boto3==1.43.117" \
    && useradd --create-home --uid 10001 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
