"""`python -m ml_server.healthcheck worker` against the real Redis and a real `mmal worker` process.

Healthy only while a worker of this host is registered in RQ for the training queue with a recent
heartbeat and a live process; unhealthy with no worker, after the worker is SIGKILLed (its registry entry
still there), with a stale heartbeat, for another host, and when Redis cannot be reached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
from rq import Queue, Worker

from ml_server.healthcheck import check_worker
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/10"  # not flushed: each test has its own queue names


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_",
                                                                   "LOG_LEVEL", "REDIS_URL"))}
    return {**env, "PYTHONPATH": str(REPO), "REDIS_URL": REDIS_URL, **extra}


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_server.healthcheck", "worker"], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


def forget_queue(queue: str) -> None:
    """Drop what a test's queue left in Redis: the entries of killed workers (they would expire in 135 s),
    the queue's registries and its jobs (failed jobs stay 7 days)."""
    conn = redis.Redis.from_url(REDIS_URL)
    for key in Worker.all_keys(queue=Queue(queue, connection=conn)):
        conn.delete(key)
        conn.srem("rq:workers", key)
    for registry in conn.scan_iter(match=f"rq:*:{queue}"):
        if conn.type(registry) == b"zset":
            for job_id in conn.zrange(registry, 0, -1):
                conn.delete(f"rq:job:{job_id.decode()}", f"rq:results:{job_id.decode()}")
        conn.delete(registry)
    conn.srem("rq:queues", f"rq:queue:{queue}")


def test_healthy_only_while_a_real_worker_runs(tmp_path):
    queue = f"mmal-hc-{uuid.uuid4().hex[:10]}"
    env = clean_env(MMAL_QUEUE=queue)
    none = healthcheck(env)
    assert none.returncode == 1 and "unhealthy: no RQ worker of host" in none.stderr, none
    log = tmp_path / "worker.log"
    # the container's command; its own session, so that killing it also kills RQ's scheduler process
    proc = subprocess.Popen([sys.executable, "-m", "mmal", "worker"], env=env, cwd=str(REPO),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: healthcheck(env).returncode == 0 or proc.poll() is not None, timeout=180, interval=0.5,
                 what="the worker's healthcheck to pass")
        assert proc.poll() is None, log.read_text()[-3000:]
        ok = healthcheck(env)
        assert ok.returncode == 0 and ok.stdout.startswith("healthy: worker") and queue in ok.stdout, ok
        # the same registry entry, judged with a clock two hours on: a heartbeat that old is a hung worker
        later = datetime.now(timezone.utc) + timedelta(hours=2)
        stale = check_worker(REDIS_URL, queue, now=later)
        assert not stale.healthy and "last heartbeat" in stale.message
        assert not check_worker(REDIS_URL, queue, hostname="some-other-container").healthy
        # another queue's healthcheck does not count this worker
        assert healthcheck(clean_env(MMAL_QUEUE=queue + "-other")).returncode == 1
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        dead = healthcheck(env)  # its registry entry is still there (for 135 s); its process is not
        assert dead.returncode == 1 and "is gone" in dead.stderr, dead
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # RQ's scheduler child, if it outlived the worker
        except ProcessLookupError:
            pass
        forget_queue(queue)


def test_unhealthy_when_redis_cannot_be_reached():
    result = healthcheck(clean_env(REDIS_URL="redis://127.0.0.1:1/0", MMAL_QUEUE="q"))
    assert result.returncode == 1 and "cannot read RQ's worker registry" in result.stderr, result
