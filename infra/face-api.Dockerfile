# Face API of infra/docker-compose.yml: MLflow's scoring server (`mlflow models serve`) for the
# registry's champion face model. No torch: the default detector (retinaface_mnet) and the
# backbone run on ONNX Runtime; the model brings the arcflow code it needs (code_paths).
# A model logged with the mtcnn or retinaface detector needs torch too: add it here, or build
# an image for that model with `mlflow models build-docker`. Build context: infra/.
FROM python:3.11.14-slim-bookworm

ARG MLFLOW_VERSION=3.17.2

RUN python -m pip install --no-cache-dir --disable-pip-version-check \
        "mlflow==${MLFLOW_VERSION}" \
        "onnxruntime==1.32.0" \
        "opencv-python-headless==5.1.0.95" \
        "numpy==2.4.6" \
        "pandas==3.1.1" \
        "pillow==13.0.0" \
    && useradd --create-home --uid 10001 faceapi

COPY --chmod=0755 face-api/entrypoint.sh /usr/local/bin/face-api-entrypoint
USER faceapi
WORKDIR /home/faceapi
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/face-api-entrypoint"]
