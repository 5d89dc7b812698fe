# The pipeline itself: `docker compose run --rm train [hydra overrides]`, as a non-root user.
FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 trainer \
    && useradd --system --uid 10001 --gid trainer --home-dir /home/trainer --create-home trainer
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY pipeline ./pipeline
COPY conf ./conf
# A regular (non-editable) install: the code in the image is the code that was built.
RUN pip install --no-cache-dir -c requirements.lock . \
    && chown -R trainer:trainer /app
USER trainer:trainer
ENTRYPOINT ["python", "-m", "pipeline"]
