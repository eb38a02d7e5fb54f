# One image for every component: the gateway by default, each compose service picks its own
# `command:` (python -m services.auth, python -m services.bootstrap, ...).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, read from pyproject.toml, so a code change does not reinstall them all.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt
COPY shopkit ./shopkit
COPY gateway ./gateway
COPY services ./services
# A regular (not editable) install, so the migrations ship as package data inside the venv.
RUN pip install --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0
RUN useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin shop
# The base image ships the standard library without bytecode, and these processes may not
# write any: each start would compile what it imports, which takes longer and leaves more
# resident (docs/performance.md, levers).
RUN python -m compileall -q -j 0 /usr/local/lib/python3.11
COPY --from=build /opt/venv /opt/venv
# An empty working directory: the code is imported from the venv, never from a source tree.
WORKDIR /app
USER shop
EXPOSE 8080
CMD ["python", "-m", "gateway"]
