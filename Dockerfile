FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libvirt-dev, pkg-config and gcc build libvirt-python; virsh and ssh reach remote hosts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libvirt-dev pkg-config gcc libvirt-clients openssh-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN SECRET_KEY=build python manage.py collectstatic --noinput

RUN useradd --system --create-home --home-dir /home/paddock --shell /usr/sbin/nologin paddock \
    && mkdir -p /app/var \
    && chown paddock:paddock /app/var

ENV PADDOCK_DATA_DIR=/app/var
USER paddock
EXPOSE 8000

CMD ["uvicorn", "paddock.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
