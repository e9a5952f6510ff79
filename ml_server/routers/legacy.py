"""What older Label Studio code paths still ask: ``GET /versions``, ``POST /job_status``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from ml_server.deps import State, Store
from ml_server.predictor import parse_project_id
from ml_server.schemas import JobStatusResponse, VersionsResponse

router = APIRouter()


@router.get("/versions", response_model=VersionsResponse)
def versions(store: Store, project: str | None = None) -> VersionsResponse:
    pids = [parse_project_id(project)] if project else store.projects()
    found: list[str] = []
    for pid in pids:
        if pid is not None:
            found.extend(store.list_versions(pid))
    return VersionsResponse(versions=found)


@router.post("/job_status", response_model=JobStatusResponse)
async def job_status(request: Request, state: State) -> JobStatusResponse | JSONResponse:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        body = await request.json()
    except Exception:
        body = {}
    job_id = body.get("job") if isinstance(body, dict) else None
    if not job_id:
        return JobStatusResponse(job_status="removed")
    try:
        job = Job.fetch(str(job_id), connection=state.redis)
        status_value = job.get_status(refresh=True)
    except NoSuchJobError:
        return JobStatusResponse(job_status="removed")
    except RedisError as exc:
        return JSONResponse(status_code=503, content={"detail": f"training queue unavailable: {exc}"})
    return JobStatusResponse(job_status=str(getattr(status_value, "value", status_value)))
