"""Container healthchecks: ``python -m ml_server.healthcheck worker`` (docker-compose.yml's worker services).

Pinging Redis says nothing about the worker: a worker that crashed, hangs or never got past start-up
leaves Redis answering. Healthy means RQ's worker registry holds a worker of *this host* (the container:
each replica of ``--scale worker=N`` has its own hostname) on the training queue (``MMAL_QUEUE``) whose
last heartbeat is recent and whose process is alive. Exit 0 healthy, 1 not (one line saying why),
2 bad arguments.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import typer

from ml_server.worker import HEARTBEAT_MAX_AGE

app = typer.Typer(help="Healthchecks of the mmal containers.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


@dataclass(frozen=True)
class WorkerHealth:
    """The outcome of :func:`check_worker`: ``healthy`` and the line that says why."""

    healthy: bool
    message: str


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def check_worker(redis_url: str, queue: str, hostname: str | None = None,
                 max_age: float = HEARTBEAT_MAX_AGE, now: datetime | None = None) -> WorkerHealth:
    """Whether a live RQ worker of ``hostname`` (default: this host) works ``queue``.

    Live: registered for the queue, heartbeat at most ``max_age`` seconds old, and (on this host) its
    process exists, so a SIGKILLed worker is unhealthy at once, not only once its key expires.
    """
    import redis
    from rq import Queue, Worker

    hostname = hostname or socket.gethostname()
    now = now or datetime.now(timezone.utc)
    conn = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        workers = Worker.all(queue=Queue(queue, connection=conn))
    except redis.RedisError as exc:
        return WorkerHealth(False, f"cannot read RQ's worker registry at {redis_url}: {exc}")
    finally:
        conn.close()
    mine = [w for w in workers if w.hostname == hostname]
    if not mine:
        return WorkerHealth(False, f"no RQ worker of host {hostname} is registered for queue {queue!r} "
                                   f"({len(workers)} of other hosts)")
    reasons = []
    for w in mine:
        beat = w.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        age = (now - beat).total_seconds() if beat is not None else None
        if age is None or age > max_age:
            reasons.append(f"{w.name}: last heartbeat {'never' if age is None else f'{age:.0f} s ago'}")
        elif hostname == socket.gethostname() and not _process_alive(w.pid):
            reasons.append(f"{w.name}: process {w.pid} is gone")
        else:
            return WorkerHealth(True, f"worker {w.name} (pid {w.pid}, {w.get_state()}) on queue {queue!r}, "
                                      f"last heartbeat {age:.0f} s ago")
    return WorkerHealth(False, f"no live RQ worker of host {hostname} on queue {queue!r}: " + "; ".join(reasons))


@app.callback()
def main() -> None:
    """Exit 0 when healthy, 1 when not."""


@app.command()
def worker(
    max_age: float = typer.Option(HEARTBEAT_MAX_AGE, "--max-age", min=1,
                                  help="Oldest heartbeat (seconds) of a live worker."),
) -> None:
    """A worker of this host is registered in RQ for MMAL_QUEUE at REDIS_URL and heartbeating."""
    from pydantic import ValidationError

    from ml_server.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(f"unhealthy: {'.'.join(map(str, first['loc']))}: {first['msg']}", err=True)
        raise typer.Exit(1) from None
    health = check_worker(settings.redis_url, settings.queue, max_age=max_age)
    typer.echo(("healthy: " if health.healthy else "unhealthy: ") + health.message,
               err=not health.healthy)
    raise typer.Exit(0 if health.healthy else 1)


if __name__ == "__main__":
    sys.exit(app())
