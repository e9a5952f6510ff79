"""LOG_LEVEL and --log-level of `mmal serve` and `mmal worker` (real processes), the masked settings line
at DEBUG, a bad level refused in one line, and the one structured ``job_failed {...}`` line per failed job
(a real RQ worker running a real training job that fails)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from ml_server import jobs
from ml_server.settings import Settings
from tests.conftest import wait_for
from tests.test_healthcheck import REDIS_URL, clean_env, forget_queue

REPO = Path(__file__).resolve().parents[1]
TOKEN = "a-secret-token-4711"


def run_mmal(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmal", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout)


def levels(output: str) -> set[str]:
    """Levels of the lines in LOG_FORMAT (``<date> <time> LEVEL logger: message``)."""
    return set(re.findall(r"^\d{4}-\d\d-\d\d [\d:,]+ ([A-Z]+) ", output, re.M))


def test_worker_honours_log_level_and_the_flag_overrides_it():
    env = clean_env(MMAL_QUEUE=f"mmal-log-{uuid.uuid4().hex[:8]}", LABEL_STUDIO_API_KEY=TOKEN)
    debug = run_mmal(["worker", "--burst"], {**env, "LOG_LEVEL": "debug"})
    assert debug.returncode == 0, debug.stderr[-3000:]
    out = debug.stdout + debug.stderr
    assert "DEBUG" in levels(out) and "DEBUG ml_server.worker: settings {" in out
    settings_line = next(ln for ln in out.splitlines() if "ml_server.worker: settings {" in ln)
    record = json.loads(settings_line.split("settings ", 1)[1])
    assert record["label_studio_api_key"] == "***" and TOKEN not in out and record["log_level"] == "DEBUG"
    flagged = run_mmal(["worker", "--burst", "--log-level", "INFO"], {**env, "LOG_LEVEL": "DEBUG"})
    assert flagged.returncode == 0, flagged.stderr[-3000:]
    out = flagged.stdout + flagged.stderr
    assert "INFO" in levels(out) and "DEBUG" not in levels(out), out[-2000:]
    quiet = run_mmal(["worker", "--burst"], {**env, "LOG_LEVEL": "WARNING"})
    assert quiet.returncode == 0 and not ({"DEBUG", "INFO"} & levels(quiet.stdout + quiet.stderr)), quiet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path: Path, args: list[str], env: dict[str, str]) -> str:
    """Start `mmal serve`, wait for /health, stop it; its output."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "mmal", "serve", "--host", "127.0.0.1", "--port", str(port),
                             *args], env={**env, "MODEL_DIR": str(tmp_path / "models")}, cwd=str(REPO),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout=120, interval=0.2, what="mmal serve to answer /health")
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return log.read_text()


def test_serve_honours_log_level_and_the_flag_overrides_it(tmp_path):
    env = clean_env(BASIC_AUTH_USER="u", BASIC_AUTH_PASS="a-secret-pass-4711")
    out = _serve(tmp_path, [], {**env, "LOG_LEVEL": "DEBUG"})
    assert "DEBUG ml_server.app: settings {" in out and "a-secret-pass-4711" not in out, out[-2000:]
    assert "Uvicorn running on" in out  # uvicorn's INFO line
    out = _serve(tmp_path, ["--log-level", "warning"], {**env, "LOG_LEVEL": "DEBUG"})
    assert not ({"DEBUG", "INFO"} & levels(out)) and "Uvicorn running on" not in out, out[-2000:]


def test_the_flag_offers_exactly_the_levels_of_the_setting():
    from mmal.cli import LogLevel
    from ml_server.settings import LOG_LEVELS

    assert tuple(level.value for level in LogLevel) == LOG_LEVELS


def test_bad_log_level_is_refused_in_one_line():
    env = clean_env()
    bad_env = run_mmal(["worker", "--burst"], {**env, "LOG_LEVEL": "loud"}, timeout=60)
    assert bad_env.returncode == 2 and "Traceback" not in bad_env.stderr
    (line,) = bad_env.stderr.strip().splitlines()
    assert "LOG_LEVEL" in line and "DEBUG" in line and "CRITICAL" in line, line
    bad_flag = run_mmal(["serve", "--log-level", "loud"], env, timeout=60)
    assert bad_flag.returncode == 2 and "--log-level" in bad_flag.stderr and "Traceback" not in bad_flag.stderr


def test_a_failed_job_writes_one_structured_line(tmp_path):
    """A training job that fails (a strategy that does not exist) logs ``job_failed {...}`` once per run:
    first with a retry to come, then for good."""
    queue = f"mmal-fail-{uuid.uuid4().hex[:8]}"
    env = clean_env(MMAL_QUEUE=queue, MMAL_STRATEGY="no_such_strategy", MMAL_JOB_RETRIES="1",
                    MMAL_JOB_RETRY_INTERVAL="0", MMAL_TRAIN_DEBOUNCE="0", MMAL_WORKER_CLASS="simple",
                    MODEL_DIR=str(tmp_path / "models"), LABEL_STUDIO_URL="http://127.0.0.1:9", LABEL_STUDIO_API_KEY=TOKEN)
    settings = Settings(REDIS_URL=REDIS_URL, MMAL_QUEUE=queue, MMAL_JOB_RETRIES=1, MMAL_JOB_RETRY_INTERVAL=0)
    conn = redis.Redis.from_url(REDIS_URL)
    project = 900_000 + int(uuid.uuid4().int % 1000)
    try:
        queued = jobs.request_training(conn, settings, project, reason="ANNOTATION_CREATED")
        assert queued["status"] == "queued"
        code = "from ml_server.worker import run_worker; run_worker(burst=True, with_scheduler=False)"
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(REPO), capture_output=True, text=True,
                              timeout=180)
        out = done.stdout + done.stderr
        lines = [ln for ln in out.splitlines() if " job_failed {" in ln]
        assert len(lines) == 2, out[-4000:]
        first, second = (json.loads(ln.split("job_failed ", 1)[1]) for ln in lines)
        for record in (first, second):
            assert record["event"] == "job_failed" and record["job_id"] == queued["job_id"]
            assert record["project"] == project and record["reason"] == "ANNOTATION_CREATED"
            assert record["error_type"] and "no_such_strategy" in record["error"], record
        assert all(" ERROR ml_server.jobs: job_failed {" in ln for ln in lines)
        assert (first["will_retry"], first["retries_left"]) == (True, 1)
        assert (second["will_retry"], second["retries_left"]) == (False, 0)
        assert jobs.get_status(conn, project)["state"] == "failed"
    finally:
        for kind in ("pending", "running", "dirty", "status", "activity"):
            conn.delete(jobs.key(kind, project))
        forget_queue(queue)
