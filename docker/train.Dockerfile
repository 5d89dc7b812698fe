# The pipeline itself: `docker compose run --rm train [hydra overrides]`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY pipeline ./pipeline
COPY conf ./conf
RUN pip install --no-cache-dir -c requirements.lock -e .
ENTRYPOINT ["python", "-m", "pipeline"]
