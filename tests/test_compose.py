"""docker-compose.yml against the Compose specification's JSON schema, plus what the stack needs: every
setting of ml_server/settings.py in .env.example and reaching the services, secrets without defaults,
the README's table in step, the build context and the images; `docker compose config` where it exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import typing
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from ml_server.settings import Settings
from tests.conftest import settings_from_env

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCS = REPO / "README.md"
ENV_EXAMPLE = REPO / ".env.example"
MMAL_SERVICES = ("ml-server", "worker", "worker-gpu")
SECRETS = {"LABEL_STUDIO_PASSWORD": "a-test-password", "LABEL_STUDIO_USER_TOKEN": "test-token-0123456789"}


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
        assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^${}]*)?\}", expr), expr
    assert "$${" not in text


# --- .env.example, env_file and what reaches the containers -----------------------------------------------
def setting_names() -> dict[str, str]:
    """Env name -> field name of every Settings field (from the model, not a hand list)."""
    return {f.validation_alias.choices[0]: name for name, f in Settings.model_fields.items()}


def env_example() -> dict[str, tuple[str, bool]]:
    """.env.example as name -> (value, active); ``# NAME=value`` lines are documented but commented out."""
    entries: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if m:
            assert m[2] not in entries, f".env.example: {m[2]} twice"
            entries[m[2]] = (m[3], m[1] is None)
    return entries


class MissingVariable(Exception):
    pass


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` (empty counts as unset)."""
    def one(m: re.Match) -> str:
        name, op, arg = m[1], m[2], m[3] or ""
        current = variables.get(name) or ""
        if op == ":?" and not current:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return current or (arg if op == ":-" else "")
    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", one, value)


def container_env(service: dict, dotenv: dict[str, str]) -> dict[str, str]:
    """A service's environment as compose builds it: its env_file .env, then ``environment:`` on top."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    if any((f["path"] if isinstance(f, dict) else f) == ".env" for f in files):
        env.update(dotenv)
    env.update({k: interpolate(str(v), dotenv) for k, v in (service.get("environment") or {}).items()})
    return env


def example_dotenv(**changes: str) -> dict[str, str]:
    """A user's .env: ``cp .env.example .env``, the secrets set, then ``changes``."""
    dotenv = {name: value for name, (value, active) in env_example().items() if active}
    return {**dotenv, **SECRETS, **changes}


def test_env_example_lists_every_setting_with_its_default():
    entries = env_example()
    missing = sorted(set(setting_names()) - set(entries))
    assert not missing, f"settings missing from .env.example: {missing}"
    for recent in ("MMAL_RECIPE", "MMAL_LS_SAMPLING", "MMAL_COLD_START", "MMAL_COLD_START_CLUSTERS",
                   "MMAL_ENCODE_AHEAD", "MMAL_PUBLISH_HEAD", "LOG_LEVEL", "MMAL_QUERY_BATCH", "MMAL_WARM_START",
                   "MMAL_SEED", "MMAL_PATIENCE"):
        assert recent in entries, recent
    defaults = Settings.model_construct()
    for env_name, field in setting_names().items():
        value, active = entries[env_name]
        if active:  # what `cp .env.example .env` gives must be the code's default, not a second opinion
            got = getattr(settings_from_env({env_name: value}), field)
            assert got == getattr(defaults, field), f".env.example {env_name}={value!r} gives {got!r}"
    # every line is documented: a comment above each NAME= (or above the group of NAME= lines it is in)
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line):
            j = i - 1
            while j >= 0 and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f".env.example line {i + 1} {line!r}: no comment above"


def test_every_service_reads_the_env_file():
    services = compose()["services"]
    for name in ("label-studio", *MMAL_SERVICES):
        files = services[name].get("env_file")
        assert files and any(f["path"] == ".env" for f in files), f"{name} has no env_file .env"
    assert "env_file" not in services["redis"]


def _changed(env_name: str, field: str) -> str:
    """A value of the setting that differs from its default (so arriving is visible)."""
    special = {"MMAL_STRATEGY_PARAMS": '{"k": 1}', "MMAL_FEATURIZERS": "simple",
               "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 8}}', "MMAL_FETCH_ALLOWED_HOSTS": "a.example.com",
               "LOG_LEVEL": "debug", "LABEL_STUDIO_URL": "http://ls.example.com:8080"}
    if env_name in special:
        return special[env_name]
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, (int, float)):
        return str(default + 1)
    if isinstance(default, Path):
        return str(default / "changed")
    return "changed"


def test_every_setting_reaches_the_mmal_services():
    """A non-default value of each setting in .env arrives in each mmal container, except the wiring that
    docker-compose.yml sets itself; the wiring has compose's values."""
    names = setting_names()
    services = compose()["services"]
    changes = {env_name: _changed(env_name, field) for env_name, field in names.items()}
    expected = settings_from_env(changes)
    for name in MMAL_SERVICES:
        svc = services[name]
        wired = set(svc["environment"])
        got = settings_from_env(container_env(svc, example_dotenv(**changes)))
        for env_name, field in names.items():
            if env_name in wired:
                continue
            assert getattr(got, field) == getattr(expected, field), f"{env_name} does not reach {name}"
        assert got.redis_url == "redis://redis:6379/0" and got.label_studio_url == "http://label-studio:8080"
        assert got.label_studio_api_key == SECRETS["LABEL_STUDIO_USER_TOKEN"]
        assert str(got.model_dir) == "/data/models" and str(got.feature_cache_dir) == "/data/feature-cache"
    # the wiring is exactly these; everything else is the user's, through .env
    assert set(services["ml-server"]["environment"]) == {"LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "REDIS_URL",
                                                         "MODEL_DIR", "MMAL_FEATURE_CACHE_DIR"}
    assert set(services["worker"]["environment"]) - set(services["ml-server"]["environment"]) == {"MMAL_DEVICE"}
    # with the example as it is, the containers run with the code's defaults
    plain = settings_from_env(container_env(services["ml-server"], example_dotenv()))
    defaults = Settings.model_construct()
    for env_name, field in names.items():
        if env_name not in services["ml-server"]["environment"]:
            assert getattr(plain, field) == getattr(defaults, field), env_name


def test_secrets_have_no_default_and_compose_refuses_without_them():
    text = COMPOSE.read_text()
    services = compose()["services"]
    for secret in SECRETS:
        assert re.search(rf"\${{{secret}:\?[^}}]*\.env", text), f"{secret} must be ${{{secret}:?...}}"
        assert not re.search(rf"\${{{secret}:?-", text), f"{secret} has a default"
        assert env_example()[secret] == ("", True), f".env.example must ship {secret} empty"
        dotenv = {**example_dotenv(), secret: ""}
        with pytest.raises(MissingVariable, match=secret):
            container_env(services["label-studio"], dotenv)
    with pytest.raises(MissingVariable, match="LABEL_STUDIO_USER_TOKEN"):
        container_env(services["worker"], {**example_dotenv(), "LABEL_STUDIO_USER_TOKEN": ""})
    ls_env = container_env(services["label-studio"], example_dotenv())
    assert ls_env["LABEL_STUDIO_PASSWORD"] == SECRETS["LABEL_STUDIO_PASSWORD"]


def readme_settings_table() -> dict[str, str]:
    """The README's 'Environment variables' table: env name -> its default cell."""
    text = DOCS.read_text()
    section = text[text.index("### Environment variables"):]
    section = section[:section.index("\n### ", 5)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
            literals = re.findall(r"`([^`]*)`", cells[1])
            whole = re.fullmatch(r"(`[^`]*`(, )?)+", cells[1]) is not None
            for i, name in enumerate(names):
                rows[name] = literals[i] if whole and len(literals) == len(names) else ""
    return rows


def test_readme_settings_table_matches_settings():
    table = readme_settings_table()
    names = setting_names()
    assert sorted(set(names) - set(table)) == [], "settings missing from README's table"
    assert sorted(set(table) - set(names)) == [], "README's table lists what Settings does not have"
    defaults = Settings.model_construct()
    checked = 0
    for env_name, literal in table.items():
        field = names[env_name]
        if literal and getattr(defaults, field) is not None:
            got = getattr(settings_from_env({env_name: literal}), field)
            assert got == getattr(defaults, field), f"README says {env_name} defaults to {literal!r}"
            checked += 1
    assert checked >= 25  # the literal defaults really are compared


# --- image, build context ---------------------------------------------------------------------------------
def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last matching pattern wins; a pattern
    that matches a parent folder matches the path)."""
    def regex(p: str) -> str:
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(.*/)?"
                i += 3
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return out

    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        pat = pat.rstrip("/")
        if any(re.fullmatch(regex(pat), prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_to_what_the_dockerfile_copies():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    dockerfile = (REPO / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for src in line.split()[:-1]]
    assert {"pyproject.toml", "README.md", "backend", "ml_server", "mmal", "connectors", "benchmark"} <= set(sources)
    for src in sources:
        assert not dockerignored(src, patterns), f"{src} is copied but ignored"
        assert not dockerignored(f"{src}/x/module.py", patterns) or "." in src, src
    for out in (".git", ".venv", ".venv-ls", ".env", "runs", "results", "models", "tests", "docs", "perf",
                "backend/__pycache__/x.pyc", "ml_server/x.pyc", ".pytest_cache", ".hypothesis"):
        assert dockerignored(out, patterns), f"{out} enters the build context"


def test_images_take_torch_from_the_pinned_wheel_index():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'pip install torch==2\.13\.0 --index-url "\$TORCH_INDEX_URL"', dockerfile)
    assert "ARG TORCH_INDEX_URL=" in dockerfile and "COPY . " not in dockerfile
    services = compose()["services"]
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("whl/cpu}")
    assert re.fullmatch(r"\$\{MMAL_TORCH_CUDA_INDEX_URL:-https://download\.pytorch\.org/whl/cu\d+\}",
                        gpu["build"]["args"]["TORCH_INDEX_URL"])
    assert cpu["image"] != gpu["image"], "the CUDA build must not overwrite the CPU image"
    assert services["ml-server"]["image"] == cpu["image"]
    example = env_example()
    for var in ("MMAL_TORCH_CPU_INDEX_URL", "MMAL_TORCH_CUDA_INDEX_URL"):
        assert example[var][1] and example[var][0].startswith("https://download.pytorch.org/whl/")


def test_worker_healthchecks_ask_rq_not_just_redis():
    services = compose()["services"]
    for name in ("worker", "worker-gpu"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "ml_server.healthcheck", "worker"]
    import ml_server.healthcheck  # noqa: F401  (the module the image runs exists)


# --- the real thing, where docker compose exists --------------------------------------------------------------
def _docker_compose() -> str | None:
    docker = shutil.which("docker")
    if not docker:
        return "docker is not installed"
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"docker has no compose plugin: {(probe.stderr or probe.stdout).strip().splitlines()[0]}"
    return None


@pytest.mark.skipif(_docker_compose() is not None, reason=str(_docker_compose()))
def test_docker_compose_config_resolves_the_file(tmp_path):
    """`docker compose config` (no daemon needed): the file loads, secrets are required, .env reaches."""
    for f in ("docker-compose.yml", ".env.example", "Dockerfile", ".dockerignore"):
        shutil.copy(REPO / f, tmp_path / f)
    cmd = ["docker", "compose", "--project-directory", str(tmp_path), "-f", str(tmp_path / "docker-compose.yml"),
           "--profile", "gpu", "config", "--format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "MMAL_", "LOG_LEVEL"))}
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "LABEL_STUDIO_" in refused.stderr, refused.stderr
    dotenv = example_dotenv(MMAL_QUERY_BATCH="7", LOG_LEVEL="DEBUG")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    for name in MMAL_SERVICES:
        environment = resolved[name]["environment"]
        assert environment["MMAL_QUERY_BATCH"] == "7" and environment["LOG_LEVEL"] == "DEBUG", name
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        for env_name in setting_names():
            assert env_name in environment or env_name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "MMAL_DEVICE") \
                or not env_example()[env_name][1], f"{env_name} does not reach {name}"
    assert resolved["label-studio"]["environment"]["LABEL_STUDIO_PASSWORD"] == SECRETS["LABEL_STUDIO_PASSWORD"]
