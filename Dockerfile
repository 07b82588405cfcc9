# One slim image, three commands: auth-server, resource-server, bff serve (chosen by the compose `command`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY auth_server ./auth_server
COPY resource_server ./resource_server
COPY bff ./bff
COPY servicekit ./servicekit
COPY jwt_bff_verifier ./jwt_bff_verifier
RUN pip install . \
 && useradd --system --uid 10001 --no-create-home --home-dir /app jwtbff \
 && mkdir -p /keys && chown jwtbff /keys

USER 10001
EXPOSE 8000 9000 9001
# Health checks call the service itself with the Python already in the image (no curl in slim images).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(os.environ.get('HEALTH_URL','http://127.0.0.1:8000/healthz'), timeout=2)"
CMD ["bff", "serve", "--host", "0.0.0.0", "--port", "8000"]
