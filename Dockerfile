# syntax=docker/dockerfile:1
# One image for the five Gantry services; the command picks the service:
#   docker run gantry services.catalog        (default: services.gateway)
# Every service listens on GANTRY_HOST (0.0.0.0 here) at GANTRY_PORT_BASE + its offset:
# gateway 8000, catalog 8001, versioning 8002, release 8003, deploy 8004.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gantry
WORKDIR /src
# Dependencies first (they change less often than the code), then the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p gantry services shared \
 && touch gantry/__init__.py services/__init__.py shared/__init__.py \
 && /opt/gantry/bin/pip install . \
 && /opt/gantry/bin/pip uninstall --yes gantry
COPY gantry ./gantry
COPY services ./services
COPY shared ./shared
RUN /opt/gantry/bin/pip install --no-deps . \
 && /opt/gantry/bin/python -c "import services.gateway.app, services.catalog.app, services.versioning.app, services.release.app, services.deploy.app"

FROM ${PYTHON_IMAGE}
# git: the catalog's local-repository fallback (no GitLab configured) runs the git program.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gantry \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin gantry \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/gantry /opt/gantry
ENV PATH=/opt/gantry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    GANTRY_HOME=/data \
    GANTRY_HOST=0.0.0.0 \
    GANTRY_PORT_BASE=8000
# The working directory is writable too: faust keeps its data folder (gantry-<service>-data) there.
WORKDIR /data
USER 10001:10001
EXPOSE 8000 8001 8002 8003 8004
# No HEALTHCHECK: the port depends on the service the container runs. docker-compose.yml and the
# Kubernetes manifests probe each service's own /readyz and /healthz.
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
