"""Start and stop a real, headless Label Studio 1.23.2 (from ``.venv-ls``) for tests and local trials.

A fresh data directory costs 40-50 s of migrations; so the first start builds a *template* data dir
(migrated, admin user and legacy token created), and every later start copies the template (a few
seconds). The environment is the one verified for 1.23.2: legacy API tokens enabled on first start,
local ML backends allowed (``ML_BLOCK_LOCAL_IP=false``, ``SSRF_PROTECTION_ENABLED=false``), no
analytics or update checks, and the plain ``USERNAME``/``PASSWORD``/``HOST``/``PORT`` fallbacks cleared.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LS_VERSION = "1.23.2"
DEFAULT_VENV = REPO / ".venv-ls"
ADMIN_USER = "admin@mmal.local"
ADMIN_PASS = "mmal-admin-pass"
ADMIN_TOKEN = "mmal0123456789abcdef0123456789abcdef0123"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """Create ``venv`` with Label Studio (scripts/labelstudio_env.sh; idempotent, ~1.5 min the first time)."""
    exe = venv / "bin" / "label-studio"
    if not (exe.exists() and (venv / f".label-studio-{LS_VERSION}").exists()):
        env = dict(os.environ, LS_VENV=str(venv))
        subprocess.run(["bash", str(REPO / "scripts" / "labelstudio_env.sh")], check=True, env=env)
    return venv


def ls_environment(data_dir: Path, port: int, token: str = ADMIN_TOKEN) -> dict[str, str]:
    """Environment for ``label-studio start`` (see the module docstring)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("USERNAME", "PASSWORD", "HOST", "PORT", "LABEL_STUDIO_HOST", "DJANGO_SETTINGS_MODULE")
           and not k.startswith(("LABEL_STUDIO_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": ADMIN_USER,
        "LABEL_STUDIO_PASSWORD": ADMIN_PASS,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LOG_LEVEL": "WARNING",
        "DJANGO_DB": "sqlite",
        "HOME": str(data_dir),
    })
    return env


@dataclass
class LabelStudioProcess:
    """A running Label Studio; ``url`` and ``token`` reach it. Use :func:`start_label_studio`."""

    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    startup_s: float = 0.0
    _owned_dirs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server (its whole process group) and remove the per-run data dir."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for d in self._owned_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def add_user(self, email: str, password: str, token: str, venv: Path = DEFAULT_VENV) -> str:
        """Create another member of the organization (a second annotator) with a legacy API token.

        Community edition has no API to add a user without an invitation e-mail flow, so this runs Label
        Studio's own Django models against the data dir, as ``label-studio start --username`` does.
        """
        if len(token) <= 5:
            raise ValueError("Label Studio ignores tokens of 5 characters or fewer")
        code = (
            "import os, sys, label_studio\nsys.path.insert(0, os.path.dirname(label_studio.__file__))\n"
            "import django; django.setup()\n"
            "from users.models import User\nfrom organizations.models import Organization\n"
            "from rest_framework.authtoken.models import Token\n"
            "import sys\nemail, password, token = sys.argv[1:4]\n"
            "user = User.objects.create_user(email=email, password=password)\n"
            "org = Organization.objects.first()\norg.add_user(user)\n"
            "user.active_organization = org\nuser.save()\n"
            "Token.objects.filter(user=user).delete()\nToken.objects.create(user=user, key=token)\n")
        env = ls_environment(self.data_dir, 0)
        env["DJANGO_SETTINGS_MODULE"] = "core.settings.label_studio"
        done = subprocess.run([str(venv / "bin" / "python"), "-c", code, email, password, token], env=env,
                              cwd=str(self.data_dir), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"creating Label Studio user {email} failed:\n{done.stderr[-3000:]}")
        return token

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the process that started Label Studio dies, even by SIGKILL,
    so an interrupted test run leaves no server behind."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _launch(venv: Path, data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    exe = venv / "bin" / "label-studio"
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir)]
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, env=ls_environment(data_dir, port), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=str(data_dir), start_new_session=True,
                            preexec_fn=_die_with_parent if os.name == "posix" else None)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
                raise RuntimeError(f"Label Studio exited with code {proc.returncode} during start:\n{tail}")
            try:
                r = client.get(f"{url}/health")
                if r.status_code == 200 and r.json().get("status") == "UP":
                    # the admin token must work too (created at the end of the first start)
                    r2 = client.get(f"{url}/api/projects", headers={"Authorization": f"Token {ADMIN_TOKEN}"})
                    if r2.status_code == 200:
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
    raise TimeoutError(f"Label Studio at {url} not healthy after {timeout:.0f} s:\n"
                       + (log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""))


def template_dir(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "mmal-template-data"


def ensure_template(venv: Path = DEFAULT_VENV, timeout: float = 240.0) -> Path:
    """A migrated data dir with the admin user and token (built once, by one full start and stop)."""
    tdir = template_dir(venv)
    ready = tdir / ".mmal-template-ready"
    if ready.exists():
        return tdir
    import fcntl

    lock_path = venv / ".mmal-template.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return tdir
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir(parents=True)
        port = free_port()
        log_path = venv / "mmal-template-start.log"
        proc = _launch(venv, tdir, port, log_path)
        tmp = LabelStudioProcess(f"http://127.0.0.1:{port}", ADMIN_TOKEN, tdir, proc, log_path)
        try:
            _wait_healthy(tmp.url, proc, timeout, log_path)
        finally:
            tmp.stop()
        ready.touch()
    return tdir


def start_label_studio(venv: Path = DEFAULT_VENV, timeout: float = 240.0) -> LabelStudioProcess:
    """Start Label Studio on a free port over a copy of the template data dir; wait until it is healthy."""
    t0 = time.monotonic()
    venv = ensure_venv(venv)
    tdir = ensure_template(venv, timeout)
    run_dir = Path(tempfile.mkdtemp(prefix="mmal-ls-"))
    data_dir = run_dir / "data"
    shutil.copytree(tdir, data_dir, ignore=shutil.ignore_patterns(".mmal-template-ready", "*.log"))
    port = free_port()
    log_path = run_dir / "label-studio.log"
    proc = _launch(venv, data_dir, port, log_path)
    ls = LabelStudioProcess(f"http://127.0.0.1:{port}", ADMIN_TOKEN, data_dir, proc, log_path,
                            _owned_dirs=[run_dir])
    try:
        _wait_healthy(ls.url, proc, timeout, log_path)
    except BaseException:
        ls.stop()
        raise
    ls.startup_s = time.monotonic() - t0
    return ls
