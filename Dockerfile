# syntax=docker/dockerfile:1
#
# The Tollgate ext_proc server.
#
#   docker build -t REGISTRY/tollgate:TAG .
#
# Two stages: a Debian 12 build stage makes a virtualenv with Tollgate and its
# dependencies; the final image is distroless Python 3.11 of the same Debian
# release (so the virtualenv's interpreter link resolves to the same
# /usr/bin/python3.11), holding that virtualenv and nothing else: no shell,
# no package manager, no compiler, no pip. It runs as a non-root user.

FROM debian:12-slim AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# The interpreter is named by its full path so that the virtualenv links to
# /usr/bin/python3.11, which the final image has too.
RUN /usr/bin/python3.11 -m venv /opt/tollgate
ENV PATH=/opt/tollgate/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY extproc ./extproc
# A regular (not editable) install: the image needs no source tree. Then the
# installer itself goes; nothing installs anything at run time.
# xds-protos carries an older copy of opentelemetry-proto's files; reinstall
# the latter so that its files win (the OTLP exporters need them).
RUN pip install . \
 && pip install --force-reinstall --no-deps "opentelemetry-proto==$(python -c \
      'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
 && python -c "from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope" \
 && pip uninstall -y pip setuptools \
 && python -c "import extproc.cli, extproc.drain, extproc.probe, extproc.server.app"


FROM gcr.io/distroless/python3-debian12:nonroot

COPY --from=build /opt/tollgate /opt/tollgate

ENV PATH=/opt/tollgate/bin:/usr/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOLLGATE_LOG_FORMAT=json

# distroless "nonroot": uid and gid 65532. Kubernetes may run it as any other
# non-root user (k8s/base uses 10001); every file here is world-readable.
USER 65532:65532

ENTRYPOINT ["/opt/tollgate/bin/tollgate"]
CMD ["serve"]
