# The towerflow image: the locked Python environment of every role, Java 17 for Spark, and the
# project. Used by the Airflow components in docker-compose.yml (their tasks run Spark, Feast and
# TensorFlow) and by `towerflow model-server`; the gateway has its own slim image (Dockerfile.gateway).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless make curl \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TF_USE_LEGACY_KERAS=1 \
    TOWERFLOW_HOME=/data \
    AIRFLOW_HOME=/data/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

WORKDIR /app
# requirements/production.lock: every role (`towerflow[all]`), no development tools (`make locks`).
# --no-deps: the lock is the whole environment (see requirements/overrides.txt for why).
COPY requirements/production.lock requirements/
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv pip install --system --no-cache --no-deps -r requirements/production.lock
COPY . .
RUN uv pip install --system --no-deps -e .

VOLUME ["/data"]
CMD ["towerflow", "--help"]
