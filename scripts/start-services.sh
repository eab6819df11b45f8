#!/usr/bin/env bash
# Start the services Paddock uses when they are not already running; never stops anything.
#   scripts/start-services.sh demo   libvirt only
#   scripts/start-services.sh test   libvirt, PostgreSQL and Redis (default)
set -euo pipefail

MODE="${1:-test}"
case "$MODE" in
    demo | test) ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# There is no systemd here, so look for daemons by process name in /proc.
running() {
    grep -qx "$1" /proc/[0-9]*/comm 2>/dev/null
}

# Poll a command for up to $1 seconds.
wait_for() {
    local tries=$(($1 * 2))
    shift
    while [ "$tries" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
        tries=$((tries - 1))
    done
    return 1
}

start_daemon() {
    if running "$1"; then
        echo "$1: found running"
    else
        $SUDO "$1" -d
        echo "$1: started"
    fi
}

# --- hugepages -----------------------------------------------------------------------------
# systemd mounts a hugetlbfs at /dev/hugepages on real hosts; libvirt backs guests with
# hugepages only through such a mount, and sees a new one only when it starts. Mount it as
# systemd would, and restart a libvirtd that started without it (running guests keep running).
HUGE_MOUNTED=0
if ! grep -qs " hugetlbfs " /proc/mounts && grep -qs hugetlbfs /proc/filesystems; then
    $SUDO mkdir -p /dev/hugepages
    if $SUDO mount -t hugetlbfs -o pagesize=2M,mode=1770,gid=kvm hugetlbfs /dev/hugepages; then
        echo "hugetlbfs: mounted at /dev/hugepages (2 MiB pages)"
        HUGE_MOUNTED=1
    else
        echo "hugetlbfs: could not mount /dev/hugepages; hugepage-backed guests will not start" >&2
    fi
fi

# --- libvirt ------------------------------------------------------------------------------
start_daemon virtlogd
if [ "$HUGE_MOUNTED" = 1 ] && running libvirtd; then
    pid="$(cat /var/run/libvirtd.pid 2>/dev/null || true)"
    if [ -n "$pid" ]; then
        echo "libvirtd: restarting (pid $pid) to see the new hugetlbfs mount"
        $SUDO kill "$pid"
        wait_for 15 sh -c "! kill -0 $pid 2>/dev/null" || true
    fi
fi
start_daemon libvirtd
if ! wait_for 15 $SUDO timeout 5 virsh -c qemu:///system version; then
    echo "libvirtd: qemu:///system does not answer (see /var/log/libvirt)" >&2
    exit 1
fi

[ "$MODE" = test ] || exit 0

# --- PostgreSQL ---------------------------------------------------------------------------
as_postgres() {
    # cd / so psql does not complain about an unreadable working directory.
    (cd / && if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi)
}

if pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "postgresql: found running"
else
    if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        $SUDO pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main
    fi
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    if ! wait_for 15 pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "postgresql: not answering on 127.0.0.1:5432" >&2
        exit 1
    fi
    echo "postgresql: started"
fi

# The tests connect as paddock/paddock and need CREATEDB for the test database. Password
# auth works with both trust and the Debian default (scram-sha-256) for 127.0.0.1.
pg_ready_for_tests() {
    [ "$(PGPASSWORD=paddock psql -h 127.0.0.1 -p 5432 -U paddock -d paddock -XAtqc \
        'SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" = t ]
}
if pg_ready_for_tests; then
    echo "postgresql: role and database paddock found"
else
    as_postgres psql -p 5432 -XAtq -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE paddock' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paddock')
\gexec
ALTER ROLE paddock WITH LOGIN CREATEDB PASSWORD 'paddock';
SELECT 'CREATE DATABASE paddock OWNER paddock'
    WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'paddock')
\gexec
SQL
    pg_ready_for_tests || { echo "postgresql: cannot log in as paddock" >&2; exit 1; }
    echo "postgresql: role and database paddock created"
fi

# --- Redis --------------------------------------------------------------------------------
redis_ok() {
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]
}
if redis_ok; then
    echo "redis: found running"
else
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_for 15 redis_ok || { echo "redis: not answering on 127.0.0.1:6379" >&2; exit 1; }
    echo "redis: started"
fi
