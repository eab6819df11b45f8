"""Test settings: the real settings, with test-friendly knobs set before they load."""

import os
import tempfile

os.environ.setdefault("PADDOCK_DEMO", "1")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# One test process is the web server, the test, and a watcher per test host (two threads each,
# each with its own database connection) at once; a production process is one of them.
os.environ.setdefault("PADDOCK_DB_POOL_MAX", "16")

from paddock.settings import *  # noqa: F403

# Tests write their node files into fresh temporary folders.
PADDOCK["TEST_NODE_DIRS"] = [*PADDOCK["TEST_NODE_DIRS"], tempfile.gettempdir()]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks run in-process when their transaction commits; tests that need a real worker start one.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = "memory://"
AUTH_PASSWORD_VALIDATORS = []

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    import tempfile

    # A file, like the embedded default (WAL, busy timeout): the in-memory shared-cache test
    # database answers concurrent writers with "table is locked" instead of waiting.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"paddock-test-{os.getpid()}.sqlite3")
    }
elif os.environ.get("PADDOCK_TEST_DB"):
    # Lets two test runs share one PostgreSQL server without dropping each other's database.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["PADDOCK_TEST_DB"]}  # noqa: F405
