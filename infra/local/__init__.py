"""The local service stack: moto S3, MLflow server, Prefect server on loopback."""
