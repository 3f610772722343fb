"""The {{service_code}} service: an HTTP API built with FastAPI."""

from fastapi import FastAPI

app = FastAPI(title="{{service_code}}")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/")
def index() -> dict[str, str]:
    return {"service": "{{service_code}}"}
