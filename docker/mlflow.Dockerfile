# The MLflow tracking server, at the version the pipeline pins, with the PostgreSQL driver and
# the basic-auth app's dependency (the `auth` extra: Flask-WTF), running as a non-root user.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg[binary]==3.3.9" "Flask-WTF==1.3.0" "WTForms==3.3.2" \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /home/mlflow --create-home mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts
COPY docker/basic_auth.ini /etc/mlflow/basic_auth.ini
COPY docker/bootstrap_accounts.py /opt/mlflow/bootstrap_accounts.py
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini
USER mlflow:mlflow
WORKDIR /home/mlflow
