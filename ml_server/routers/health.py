"""``GET /health``: instant, no auth (Label Studio allows 1 s)."""

from __future__ import annotations

from fastapi import APIRouter

from ml_server.schemas import HealthResponse

MODEL_CLASS = "MMALFusionBackend"

router = APIRouter()


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(model_class=MODEL_CLASS)
