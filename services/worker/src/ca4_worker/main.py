"""ASGI entry point: ``uvicorn ca4_worker.main:app``."""

from fastapi import FastAPI

app = FastAPI(title="CA4 worker")


@app.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}
