"""Training jobs on RQ, coalesced per project, and the project state the server reports.

Why the coalescing: Label Studio sends one webhook per annotation and gives the backend 1 s to answer,
so training is never done inline; and a burst of 50 annotations must not pile up 50 trainings. Per
project, Redis holds (all transitions are atomic Lua scripts):

- ``pending``: the id of the one job waiting in the queue. A training request while one is pending is
  coalesced into it (the job pulls *all* annotations when it starts, so it covers the new label too).
- ``running``: a lock held by the job that is training (with a TTL, so a killed worker cannot block
  the project forever). The job clears ``pending`` when it starts, so a label that arrives *during*
  training enqueues exactly one follow-up job.
- ``dirty``: set by a job that starts while another one holds the lock (several workers); it then exits
  at once, and the running job enqueues one follow-up when it finishes.

So a burst leads to one or two trainings, never more, with any number of workers. A job that fails
leaves the previous model version serving (see :mod:`ml_server.model_store`).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from backend.files import json_default_str
from ml_server.settings import ProjectOverrides, Settings, get_settings

log = logging.getLogger(__name__)

PREFIX = "mmal:ls"
TRAIN_FUNC = "ml_server.jobs.train_project"
TRAINING_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                              "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "START_TRAINING",
                              "TASKS_CREATED", "TASKS_DELETED"})
"""Webhook actions that queue a job: labels changed (train), or tasks came or went (encode them ahead, and
re-rank the pool: below the minimum a new cold-start order, above it a training that scores the new tasks)."""

_REQUEST = """
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return false
"""
_DROP_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""
_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[2]))
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[3])
return 1
"""
_TAKEOVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('DEL', KEYS[2])
return 1
"""
_MARK_SEEN = """
local fresh = 0
for i = 1, #ARGV - 1, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    fresh = 1
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[#ARGV]))
return fresh
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DEL', KEYS[2]) return 1 end
return 0
"""


def key(kind: str, project_id: int) -> str:
    """Redis key of one piece of per-project state (``pending``, ``running``, ``dirty``, ``status``, ...)."""
    return f"{PREFIX}:{kind}:{int(project_id)}"


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for ``REDIS_URL`` with short timeouts (the server must answer webhooks within 1 s)."""
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


def training_queue(conn: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue, connection=conn, default_timeout=settings.job_timeout)


# --- project metadata written by the server ---------------------------------------------------------------
def save_project_setup(conn: redis.Redis, project_id: int, data: dict[str, Any]) -> None:
    """What /setup learned about a project (label config, extra params, Label Studio's hostname and token)."""
    conn.set(key("project", project_id), json.dumps(data))


def load_project_setup(conn: redis.Redis, project_id: int) -> dict[str, Any]:
    raw = conn.get(key("project", project_id))
    return json.loads(raw) if raw else {}


def first_connect(conn: redis.Redis, project_id: int) -> bool:
    """True exactly once per project (per Redis): the first /setup of a project queues the encoding."""
    return bool(conn.set(key("connected", project_id), repr(time.time()), nx=True))


def project_settings(settings: Settings, setup: dict[str, Any]) -> Settings:
    """Settings with the project's extra params applied (invalid ones raise a clear error)."""
    extra = setup.get("extra_params")
    if isinstance(extra, str) and extra.strip():
        extra = json.loads(extra)
    if not extra:
        return settings
    if not isinstance(extra, dict):
        raise ValueError(f"extra params must be a JSON object, got {type(extra).__name__}")
    return ProjectOverrides(**extra).apply(settings)


# --- status -------------------------------------------------------------------------------------------------
def set_status(conn: redis.Redis, project_id: int, **fields: Any) -> None:
    """Set ``fields`` of the project's status record (what GET /status shows).

    A Redis hash with one JSON value per field: the server and the workers update different fields at
    the same time without overwriting each other's (no read-modify-write).
    """
    fields["updated_at"] = time.time()
    conn.hset(key("status", project_id),
              mapping={k: json.dumps(v, default=json_default_str) for k, v in fields.items()})


def get_status(conn: redis.Redis, project_id: int) -> dict[str, Any]:
    raw = conn.hgetall(key("status", project_id))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def known_projects(conn: redis.Redis) -> list[int]:
    """Projects with a status or setup record in Redis."""
    ids: set[int] = set()
    for kind in ("status", "project"):
        for k in conn.scan_iter(match=f"{PREFIX}:{kind}:*", count=500):
            tail = k.decode().rsplit(":", 1)[-1]
            if tail.isdigit():
                ids.add(int(tail))
    return sorted(ids)


def training_count(conn: redis.Redis, project_id: int) -> int:
    """How many trainings of the project have completed (each one produced a model version)."""
    return int(conn.get(key("trainings", project_id)) or 0)


def training_state(conn: redis.Redis, project_id: int) -> dict[str, Any]:
    """pending job id, running job id, dirty flag: the coalescing state of the project."""
    pending, running, dirty = conn.mget(key("pending", project_id), key("running", project_id),
                                        key("dirty", project_id))
    return {"pending": pending.decode() if pending else None, "running": running.decode() if running else None,
            "dirty": bool(dirty)}


# --- enqueueing -----------------------------------------------------------------------------------------------
def _job_is_live(conn: redis.Redis, job_id: str) -> bool:
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=True)
    return status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED, None)


def request_training(conn: redis.Redis, settings: Settings, project_id: int, reason: str = "") -> dict[str, Any]:
    """Enqueue a training of ``project_id`` unless one is already pending; never trains inline.

    Returns ``{"status": "queued" | "coalesced", "job_id": ...}``.
    """
    pid = int(project_id)
    pending_key = key("pending", pid)
    request = conn.register_script(_REQUEST)
    for _attempt in range(2):
        job_id = f"mmal-train-{pid}-{uuid.uuid4().hex[:12]}"
        current = request(keys=[pending_key], args=[job_id, settings.job_timeout * 4])
        if current is None:
            break
        current = current.decode() if isinstance(current, bytes) else str(current)
        if _job_is_live(conn, current):
            return {"status": "coalesced", "job_id": current}
        # the pending job vanished (a crash between flag and enqueue, or an expired job): replace it
        conn.register_script(_DROP_IF)(keys=[pending_key], args=[current])
    else:
        return {"status": "coalesced", "job_id": current}
    try:
        retry = None
        if settings.job_retries:
            # exponential backoff: a Label Studio that is briefly down gets time to come back
            retry = Retry(max=settings.job_retries,
                          interval=[settings.job_retry_interval * 2**k for k in range(settings.job_retries)])
        training_queue(conn, settings).enqueue_call(
            TRAIN_FUNC, args=(pid,), kwargs={"reason": reason}, job_id=job_id, timeout=settings.job_timeout,
            result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600, retry=retry,
            description=f"train Label Studio project {pid} ({reason or 'request'})")
    except BaseException:
        conn.register_script(_DROP_IF)(keys=[pending_key], args=[job_id])
        raise
    set_status(conn, pid, queued_at=time.time(), queued_job=job_id)
    return {"status": "queued", "job_id": job_id}


# --- duplicate and out-of-order webhooks -------------------------------------------------------------------------
SEEN_TTL = 30 * 24 * 3600
_DELETED = 10**18  # "newer than any update": an annotation id is never reused by Label Studio


def _stamp(value: Any) -> int | None:
    """Label Studio's ``updated_at`` (ISO 8601) as integer microseconds, or None when absent/unparsable."""
    if not isinstance(value, str) or not value:
        return None
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def webhook_events(action: str, payload: dict[str, Any]) -> list[tuple[str, int]]:
    """What an annotation webhook reports, as (field, stamp) pairs a later copy of it cannot beat.

    ``a:<id>`` -> the annotation's ``updated_at``: a second delivery (duplicate) or an older version arriving
    after a newer one (out of order) has a stamp no greater than the one seen. A deletion stamps ``d:<id>`` and
    lifts ``a:<id>`` above every update. Empty (never deduplicated) when the payload lacks ids or times, and
    for START_TRAINING, an explicit request.
    """
    if action == "START_TRAINING":
        return []
    annotations = payload.get("annotations")
    if not isinstance(annotations, list):
        annotations = [payload.get("annotation")]
    deleted = action in ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
    events: list[tuple[str, int]] = []
    for ann in annotations:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if isinstance(ann_id, bool) or not isinstance(ann_id, int):
            return []
        if deleted:
            events += [(f"d:{ann_id}", 1), (f"a:{ann_id}", _DELETED)]
            continue
        stamp = _stamp(ann.get("updated_at"))
        if stamp is None:
            return []
        events.append((f"a:{ann_id}", stamp))
    return events


def events_fresh(conn: redis.Redis, project_id: int, events: list[tuple[str, int]]) -> bool:
    """Whether any event is newer than what the project has seen (no events: always fresh)."""
    if not events:
        return True
    seen = conn.hmget(key("seen", project_id), [f for f, _ in events])
    return any(cur is None or int(float(cur)) < stamp for cur, (_, stamp) in zip(seen, events))


def mark_events(conn: redis.Redis, project_id: int, events: list[tuple[str, int]]) -> None:
    """Remember ``events`` (keeps the newest stamp per field, atomically)."""
    if events:
        args: list[Any] = [x for pair in events for x in pair] + [SEEN_TTL]
        conn.register_script(_MARK_SEEN)(keys=[key("seen", project_id)], args=args)


def pending_job(conn: redis.Redis, project_id: int) -> str | None:
    """The id of the live job waiting to train the project, if any."""
    current = conn.get(key("pending", project_id))
    if current is None:
        return None
    current = current.decode()
    return current if _job_is_live(conn, current) else None


# --- liveness of the job that holds a project's lock --------------------------------------------------------
def labels_changed_since(conn: redis.Redis, project_id: int) -> bool:
    """True when a job queued because labels changed (an annotation webhook, START_TRAINING) waits for this
    project: it will publish a fresher order, so the running job may stop pushing the tail of its own
    (see ``ml_server.training._publish_head_first``). A job queued for tasks only does not count: it scores
    new tasks and relies on every other task holding the serving version's prediction."""
    from ml_server.training import SCORING_REASONS

    current = pending_job(conn, project_id)
    if current is None:
        return False
    try:
        job = Job.fetch(current, connection=conn)
    except NoSuchJobError:
        return False
    return (job.kwargs or {}).get("reason") not in SCORING_REASONS


def job_alive(conn: redis.Redis, job_id: str) -> bool:
    """Whether ``job_id`` is still running: RQ status STARTED and its worker still sends heartbeats.

    False after a SIGKILLed work horse (its worker marks the job failed or schedules its retry) and after
    a SIGKILLed worker (its heartbeat key expires). Jobs run outside RQ (``inline-``) count as alive.
    """
    if job_id.startswith("inline-"):
        return True
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return False
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return False
    worker = job.worker_name
    return not worker or bool(conn.exists(f"rq:worker:{worker}"))


def effective_state(conn: redis.Redis, record: dict[str, Any]) -> tuple[str, str | None]:
    """(state, error) for /status: a "training" whose job died without finishing reads "interrupted"."""
    state = record.get("state", "idle")
    job_id = record.get("job_id")
    if state == "training" and isinstance(job_id, str) and not job_alive(conn, job_id):
        try:
            rq_status = Job.fetch(job_id, connection=conn).get_status(refresh=False)
            rq_status = getattr(rq_status, "value", rq_status)
        except NoSuchJobError:
            rq_status = "gone"
        return "interrupted", (f"training job {job_id} stopped without finishing (work horse or worker killed); "
                               f"RQ status: {rq_status}")
    return state, record.get("last_error")


def queue_depth(conn: redis.Redis, settings: Settings) -> int:
    return int(training_queue(conn, settings).count)


# --- the job --------------------------------------------------------------------------------------------------
def _current_connection(settings: Settings) -> tuple[redis.Redis, str]:
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        return job.connection, job.id
    return connect(settings), f"inline-{uuid.uuid4().hex[:12]}"


def note_activity(conn: redis.Redis, project_id: int, now: float | None = None) -> None:
    """Remember when the project last had a fresh webhook (the debounce of :func:`settle` reads it)."""
    conn.set(key("activity", project_id), repr(time.time() if now is None else now), ex=24 * 3600)


def settle(conn: redis.Redis, project_id: int, quiet_s: float, max_wait_s: float,
           sleep: Any = time.sleep) -> float:
    """Wait until the project had no webhook for ``quiet_s`` seconds, at most ``max_wait_s``; returns the
    seconds waited. Called by a training job *before* it takes the lock, while it is still the project's
    pending job, so webhooks arriving meanwhile coalesce into it: a burst of annotations is one training
    with all of them instead of one with the first few and a follow-up."""
    if quiet_s <= 0 or max_wait_s <= 0:
        return 0.0
    t0 = time.monotonic()
    while True:
        raw = conn.get(key("activity", project_id))
        last = float(raw) if raw else 0.0
        quiet_for = time.time() - last
        waited = time.monotonic() - t0
        if quiet_for >= quiet_s or waited >= max_wait_s:
            return waited
        sleep(max(0.05, min(quiet_s - quiet_for, max_wait_s - waited, 0.5)))


def train_project(project_id: int, reason: str = "") -> dict[str, Any]:
    """RQ job: pull every annotation from Label Studio, train, rank the pool, push predictions, switch version.

    Steps: wait for a burst of webhooks to settle (:func:`settle`); take the project's training lock (or mark it dirty and exit when another job holds it);
    pull all tasks with annotations through label-studio-sdk; stop if fewer than the minimum are
    labelled; featurize (feature cache); train the fusion model (GPU when present); save it atomically
    as a new version; score the unlabelled pool with the project's strategy; write one prediction per
    task in bulk; make the version current here and in Label Studio (``project.model_version``).
    """
    base = get_settings()
    conn, job_id = _current_connection(base)
    pid = int(project_id)
    try:
        return _train_project(conn, base, pid, job_id, reason)
    except Exception as exc:
        log.error("job_failed %s", json.dumps(job_failure_record(job_id, pid, reason, exc), sort_keys=True,
                                               default=json_default_str))
        raise


def job_failure_record(job_id: str, project_id: int, reason: str, exc: BaseException) -> dict[str, Any]:
    """The one structured log line a failed job writes (``job_failed {...}``); ``will_retry`` when RQ
    runs it again (``MMAL_JOB_RETRIES``), so an operator tells a final failure from a transient one."""
    from rq import get_current_job

    job = get_current_job()
    retries_left = int(job.retries_left or 0) if job is not None else 0
    return {"event": "job_failed", "job_id": job_id, "project": int(project_id), "reason": reason or "request",
            "error_type": type(exc).__name__, "error": str(exc)[:2000], "retries_left": retries_left,
            "will_retry": retries_left > 0}


def _train_project(conn: redis.Redis, base: Settings, pid: int, job_id: str, reason: str) -> dict[str, Any]:
    """:func:`train_project` past the connection: debounce, lock (or defer), train, release, follow-up."""
    waited = settle(conn, pid, base.train_debounce, base.train_debounce_max)
    if waited >= 0.05:
        log.info("project %s: waited %.1f s for the annotations to settle", pid, waited)
    acquire = conn.register_script(_ACQUIRE)
    got = acquire(keys=[key("pending", pid), key("running", pid), key("dirty", pid)],
                  args=[job_id, base.job_timeout + 60])
    if not got:
        holder = conn.get(key("running", pid))
        holder = holder.decode() if holder else None
        if holder and not job_alive(conn, holder):
            # the holder was killed without releasing its lock (SIGKILL, OOM): do not wait for the lock's TTL
            takeover = conn.register_script(_TAKEOVER)
            got = takeover(keys=[key("running", pid), key("dirty", pid)], args=[holder, job_id, base.job_timeout + 60])
            if got:
                log.warning("project %s: took over the training lock of job %s, which died without finishing",
                            pid, holder)
    if not got:
        log.info("project %s: another job is training; marked dirty for one follow-up", pid)
        return {"status": "deferred", "project": pid, "job_id": job_id}
    follow_up = False
    try:
        result = _train_locked(conn, base, pid, job_id, reason)
        return result
    finally:
        release = conn.register_script(_RELEASE)
        follow_up = bool(release(keys=[key("running", pid), key("dirty", pid)], args=[job_id]))
        if follow_up:
            try:
                request_training(conn, base, pid, reason="follow-up")
            except Exception:  # the next webhook will enqueue it anyway
                log.exception("project %s: could not enqueue the follow-up training", pid)


def _train_locked(conn: redis.Redis, base: Settings, pid: int, job_id: str, reason: str) -> dict[str, Any]:
    from ml_server.training import run_training

    t0 = time.time()
    set_status(conn, pid, state="training", job_id=job_id, started_at=t0, reason=reason, last_error=None)
    try:
        setup = load_project_setup(conn, pid)
        settings = project_settings(base, setup)
        summary = run_training(pid, settings, setup, reason=reason,
                               superseded=lambda: labels_changed_since(conn, pid))
    except Exception as exc:
        set_status(conn, pid, state="failed", last_error=f"{type(exc).__name__}: {exc}",
                   last_traceback=traceback.format_exc()[-4000:], failed_at=time.time(), job_id=job_id)
        raise
    if summary.get("status") == "waiting":
        set_status(conn, pid, state="waiting_for_annotations", n_labeled=summary["n_labeled"],
                   min_annotations=summary["min_annotations"], job_id=job_id, cold_start=summary.get("cold_start"))
        return summary
    if summary.get("status") == "scored":
        set_status(conn, pid, state="idle", last_scoring=summary, finished_at=time.time(), job_id=job_id)
        return summary
    conn.incr(key("trainings", pid))
    conn.lpush(key("history", pid), json.dumps(summary, default=json_default_str))
    conn.ltrim(key("history", pid), 0, 19)
    set_status(conn, pid, state="idle", model_version=summary["model_version"], last_training=summary,
               diagnostics=summary.get("diagnostics"), finished_at=time.time(), job_id=job_id)
    return summary
