# The MLflow tracking server, at the version the pipeline pins, with the PostgreSQL driver.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg[binary]==3.3.9"
