# scicode-harness: a NeMo Evaluator-compatible SciCode container.
#
# Built by `make container` / `python -m harness.cli.container`, which assembles a
# small temporary build context (never the repository itself):
#
#   Dockerfile                          this file
#   container/README.md                 -> /workspace/README.md (third-party sources, licences)
#   core_evals/scicode/framework.yml    -> /opt/metadata/scicode/framework.yml (own small layer)
#   sandbox_image/                      the sandbox image recipe + lock (sandboxes are checked against it)
#   wheels/                             every dependency (cp311 manylinux x86_64), incl. the sandbox lock's
#   envwheels/<env>/                    each sandbox environment's locked wheels (its venv, for bwrap)
#   debs/                               Debian's bubblewrap package
#   project/                            this project's wheel
#   data/                               the SciCode problem files, verified against their pinned sha256
#   testdata/                           empty, or test_data.h5 (`--with-test-data`)
#
# The build needs no network (the SDK builds with network_mode=none and pip runs
# with --no-index). Offline, BASE_IMAGE is the debootstrapped Debian bookworm
# base shared with the sandbox image (scicode-base:bookworm-py311, whose python3
# is 3.11); with a registry it can stay python:3.11-slim-bookworm.
#
# Sandboxes: with /var/run/docker.sock mounted the harness starts them as
# sibling containers on the host's daemon (program code goes over stdin, so no
# host path is shared); without a socket `sandbox=auto` runs them under bubblewrap
# in the venvs built here (/opt/scicode-cache/envs), when the container may create
# namespaces (docker run --security-opt seccomp=unconfined --security-opt
# systempaths=unconfined; Slurm/enroot, Apptainer), else as processes. The image
# runs as root by default because the Docker socket is usually root:docker 0660.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: venv + dataset (the wheels and raw data never reach the final image)
FROM ${BASE_IMAGE} AS install
LABEL org.scicode-harness.stage=container-install
ARG HARNESS_VERSION=0.1.0
ENV SCICODE_HARNESS_CACHE=/opt/scicode-cache \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
COPY sandbox_image/requirements.lock /tmp/sandbox-requirements.lock
COPY wheels/ /tmp/wheels/
# Dependencies first (a layer that survives changes to the harness's own code):
# the sandbox image's hashed lock, so numpy, scipy, sympy, h5py and matplotlib have
# the sandbox's exact versions and `sandbox=process` here computes like the Docker
# sandbox; then the rest of the closure, which was resolved against those pins.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-index --find-links /tmp/wheels --only-binary=:all: \
        --require-hashes --no-deps -r /tmp/sandbox-requirements.lock \
 && /opt/venv/bin/python -m pip install --no-index --no-deps /tmp/wheels/*.whl
COPY project/ /tmp/project/
RUN /opt/venv/bin/python -m pip install --no-index --find-links /tmp/wheels --only-binary=:all: \
        "/tmp/project/scicode_harness-${HARNESS_VERSION}-py3-none-any.whl" \
 && /opt/venv/bin/python -m pip check \
 && /opt/venv/bin/python -c "import nemo_evaluator, core_evals.scicode, harness, numpy, scipy, h5py, docker; print('imports ok')" \
 && mkdir -p /opt/scicode-harness \
 && /opt/venv/bin/python -c "import importlib.metadata as M; lic = lambda d: d.metadata.get('License-Expression') or next((c.split(' :: ')[-1] for c in (d.metadata.get_all('Classifier') or []) if c.startswith('License ::')), None) or ((d.metadata.get('License') or '').strip().splitlines() or ['see the package metadata'])[0][:80]; print('\n'.join(sorted('%s==%s  %s' % (d.metadata['Name'], d.version, lic(d)) for d in M.distributions())))" \
        > /opt/scicode-harness/THIRD_PARTY_PACKAGES.txt
COPY envwheels/ /tmp/envwheels/
COPY sandbox_image/ /tmp/sandbox_image/
RUN for env in 2024 2025; do \
        SCICODE_HARNESS_IMAGE_DIR=/tmp/sandbox_image /opt/venv/bin/scicode-harness env build \
            --env $env --wheelhouse /tmp/envwheels/$env || exit 1; \
    done
COPY data/ /tmp/scicode-data/
COPY testdata/ /tmp/scicode-testdata/
RUN /opt/venv/bin/scicode-harness data pull --from /tmp/scicode-data \
 && /opt/venv/bin/scicode-harness data verify \
 && if [ -f /tmp/scicode-testdata/test_data.h5 ]; then \
        mkdir -p /opt/scicode-cache/test_data \
     && mv /tmp/scicode-testdata/test_data.h5 /opt/scicode-cache/test_data/test_data.h5 \
     && /opt/venv/bin/python -c "from harness.data.testdata import default_path, verify_test_data; verify_test_data(default_path()); print('test_data.h5 verified')"; \
    fi \
 && /opt/venv/bin/nemo-evaluator ls > /tmp/ls.txt 2>&1 \
 && for t in scicode scicode_background scicode_verified scicode_verified_background scicode_aa_v2 aa_scicode; do grep -q "\* $t\$" /tmp/ls.txt || { cat /tmp/ls.txt; exit 1; }; done \
 && rm -rf /opt/scicode-cache/logs /opt/scicode-cache/*.lock \
 && mkdir -p /opt/scicode-cache/targets /opt/scicode-cache/logs \
 && chmod -R a+rX,go-w /opt/scicode-cache /opt/scicode-harness \
 && chmod 1777 /opt/scicode-cache/targets /opt/scicode-cache/logs

# ---- stage 2: the runtime image
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG HARNESS_VERSION=0.1.0
ARG INPUTS_DIGEST=unknown
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SCICODE_HARNESS_CACHE=/opt/scicode-cache \
    SCICODE_HARNESS_IMAGE_DIR=/opt/scicode-harness/sandbox_image \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
COPY --from=install /opt/scicode-cache /opt/scicode-cache
COPY --from=install /opt/venv /opt/venv
COPY --from=install /opt/scicode-harness /opt/scicode-harness
COPY sandbox_image/ /opt/scicode-harness/sandbox_image/
COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/bubblewrap_*.deb && rm -rf /tmp/debs && bwrap --version
# The launcher writes config_ef.yaml into the working directory and may run the
# image as any user, so /workspace is world-writable. The cache is read-only
# except targets/ and logs/ (sticky, world-writable; set in the install stage).
RUN mkdir -p /workspace && chmod 0777 /workspace
# nemo-evaluator-launcher reads task definitions from image layers under 100 KB
# holding files below /opt/metadata: this COPY is that layer and nothing else.
COPY core_evals/scicode/framework.yml /opt/metadata/scicode/framework.yml
COPY container/README.md /workspace/README.md
WORKDIR /workspace
LABEL org.opencontainers.image.title="scicode-harness" \
      org.opencontainers.image.description="NeMo Evaluator-compatible SciCode harness; model-written code runs in sibling sandbox containers" \
      org.opencontainers.image.version="${HARNESS_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.scicode-harness.version="${HARNESS_VERSION}" \
      org.scicode-harness.container-inputs="${INPUTS_DIGEST}" \
      org.scicode-harness.base="${BASE_IMAGE}"
CMD ["bash"]
