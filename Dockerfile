# The towerflow image: the locked Python environment, Java 17 for Spark, and the project.
# Used by every towerflow service in docker-compose.yml (Airflow components, gateway, model server).
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
# requirements.lock is compiled with the `dev` extra (pytest, ruff, mypy, moto, ...), so the image
# still carries those tools; a production lock without that extra is issue 18's follow-up.
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv pip install --system --no-cache -r requirements.lock
COPY . .
RUN uv pip install --system --no-deps -e .

VOLUME ["/data"]
CMD ["towerflow", "--help"]
