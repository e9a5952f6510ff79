"""docker-compose.yml against the Compose specification's JSON schema, plus what the stack needs."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from ml_server.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCS = REPO / "README.md"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict:
    # the Compose specification schema, as vendored by check-jsonschema (no network needed)
    path = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(path.read_text())


def test_compose_file_matches_the_compose_specification():
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file():
    schema = compose_schema()
    broken = compose()
    broken["services"]["worker"]["deploy"] = {"replicas": "many"}
    broken["services"]["redis"]["healthcheck"]["interval"] = 5
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert len(list(validator.iter_errors(broken))) >= 1


def test_services_volumes_and_healthchecks():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"label-studio", "redis", "ml-server", "worker", "worker-gpu"}
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    ls_env = services["label-studio"]["environment"]
    assert ls_env["ML_BLOCK_LOCAL_IP"] == "false" and ls_env["SSRF_PROTECTION_ENABLED"] == "false"
    assert ls_env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    for name, svc in services.items():
        assert "healthcheck" in svc and svc["healthcheck"]["test"], name
    assert {"models", "feature-cache", "label-studio-data", "redis-data"} <= set(doc["volumes"])
    for name in ("ml-server", "worker", "worker-gpu"):
        mounts = {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]}
        env = services[name]["environment"]
        assert mounts["models"] == env["MODEL_DIR"] and mounts["feature-cache"] == env["MMAL_FEATURE_CACHE_DIR"]
        assert env["REDIS_URL"].startswith("redis://redis:") and env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["ml-server"]["ports"] == ["9090:9090"]
    assert services["ml-server"]["command"][:2] == ["mmal", "serve"]


def test_worker_scales_and_gpu_variant_reserves_a_device():
    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"] == ["mmal", "worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` must work
    gpu = services["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["MMAL_DEVICE"] == "cuda"


def _compose_variables(doc: dict) -> set[str]:
    text = COMPOSE.read_text()
    names = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    for svc in doc["services"].values():
        names |= set((svc.get("environment") or {}).keys())
    return names


def test_every_environment_variable_is_documented():
    docs = DOCS.read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", docs))
    settings_vars = {f.validation_alias.choices[0] for f in Settings.model_fields.values()}
    missing = sorted((_compose_variables(compose()) | settings_vars) - documented)
    assert not missing, f"not documented in README.md: {missing}"


def test_interpolations_are_well_formed():
    text = COMPOSE.read_text()
    for expr in re.findall(r"\$\{[^}]*\}", text):
        assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?-[^${}]*)?\}", expr), expr
    assert "$${" not in text
