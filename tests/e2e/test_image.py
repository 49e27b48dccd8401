"""The image, built for real from the repository's Dockerfile and exercised as a
container runtime would run it.

Here no public registry is reachable and no container can start (the OCI runtime's
setrlimit is refused), so:
- the base is made locally with Debian's mmdebstrap (bookworm, the release and
  base-passwd of ``python:3.11-slim-bookworm``), ``podman import``ed and passed as the
  Dockerfile's ``BASE_IMAGE``; it is cached in podman's image store under a tag keyed
  by the hash of its recipe, so only the first run pays the 20-80 s;
- podman builds with ``--cgroup-manager=cgroupfs --isolation=chroot``; pip inside the
  build gets this machine's certificate bundle and index through a build volume (a
  pip.conf at /etc/pip.conf), never through the Dockerfile;
- the Dockerfile's ``dependencies`` stage (the third-party packages, about 500 MB) is
  tagged by the hash of the files its layers come from, so its layers stay in the store
  and a change to the code rebuilds only the small layers above it; every other image
  the build makes is removed (the store keeps the base and the newest dependency
  stages, not one 750 MB image per run);
- the image is ``podman image mount``ed (a read-only view) and its own binaries run
  with the image's environment, working folder and user (``chroot --userspec``), with
  /proc and /dev bound and a tmpfs on /tmp, in a private mount namespace: everything
  but /tmp is read-only, as under Kubernetes' ``readOnlyRootFilesystem`` with an
  emptyDir on /tmp. Its network is the host's: serve answers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, require_tool
from mcp_servers.harness import free_port
from serve_harness import stop_process

BASE_RECIPE = ["mmdebstrap", "--variant=minbase",
               "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates", "bookworm"]
BASE_TAG = "localhost/voice-runtime-test-base:" + hashlib.sha256(json.dumps(BASE_RECIPE).encode()).hexdigest()[:16]
IMAGE_REPO = "localhost/voice-runtime"  # each run's image is IMAGE_REPO:test-<pid>, removed after the run
DEPENDENCIES_REPO = "localhost/voice-runtime-test-dependencies"
KEEP_DEPENDENCIES = 3  # branches with different dependencies take turns on one machine
BUILD_FLAGS = ["--pull=never", "--cgroup-manager=cgroupfs", "--isolation=chroot",
               "--format", "docker"]  # docker format: OCI has no HEALTHCHECK
WRITABLE = "/tmp"  # the one path the Dockerfile and the Deployment make writable
# one build (and the store's clean-up) at a time on this machine: xdist workers and other checkouts
LOCK = Path(tempfile.gettempdir()) / "voice-runtime-image-test.lock"

pytestmark = pytest.mark.timeout(1200)  # a first build downloads every dependency


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    with open(LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def podman(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run([require_tool("podman", "apt-get install podman"), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"podman {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def base_image(workdir: Path) -> str:
    """The stand-in for python:3.11-slim-bookworm, made once per recipe."""
    require_tool("podman", "apt-get install podman")
    if subprocess.run(["podman", "image", "exists", BASE_TAG]).returncode != 0:
        require_tool("mmdebstrap", "apt-get install mmdebstrap")
        rootfs = workdir / "rootfs.tar"
        proc = subprocess.run([*BASE_RECIPE, str(rootfs)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        podman("import", str(rootfs), BASE_TAG, timeout=300)
        rootfs.unlink()
    return BASE_TAG


def pip_volumes(workdir: Path) -> list[str]:
    """This machine's pip settings for the build's RUN steps: its certificate
    bundle (a proxy here re-signs TLS) and index, as read-only build volumes."""
    lines, volumes = ["[global]", "default-timeout = 180"], []
    cert = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if cert and Path(cert).is_file():
        volumes += ["-v", f"{cert}:/run/pip-cert.pem:ro"]
        lines.append("cert = /run/pip-cert.pem")
    if os.environ.get("PIP_INDEX_URL", "").startswith(("http://", "https://")):
        lines.append(f"index-url = {os.environ['PIP_INDEX_URL']}")
    conf = workdir / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    return [*volumes, "-v", f"{conf}:/etc/pip.conf:ro"]


@dataclass
class Image:
    root: Path  # the read-only mount
    config: dict
    healthcheck: list[str]

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the image as its user, with its environment and
        working folder, everything read-only but a fresh tmpfs on /tmp."""
        user = self.config["User"]
        setup = ('M=$1; shift; mount --rbind /proc "$M/proc" && mount --rbind /dev "$M/dev" '
                 f'&& mount -t tmpfs -o mode=1777,size=256m tmpfs "$M{WRITABLE}" '
                 f'&& exec chroot --userspec={user} "$M" /usr/bin/env -i --chdir="$WD" "$@"')
        return ["unshare", "--mount", "--propagation", "private", "env", f"WD={self.config['WorkingDir']}",
                "sh", "-c", setup, "sh", str(self.root), *self.config["Env"], *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)


def images(*filters: str) -> set[str]:
    return {i.removeprefix("sha256:") for i in podman("images", "--all", "--quiet", "--no-trunc", *filters).split()}


def dependencies_tag(base: str) -> str:
    """A tag for the ``dependencies`` stage, from what its layers are made of."""
    digest = hashlib.sha256(base.encode())
    for name in ("Dockerfile", "pyproject.toml"):
        digest.update((REPO / name).read_bytes())
    return f"{DEPENDENCIES_REPO}:{digest.hexdigest()[:16]}"


def forget_old_images(current: str) -> None:
    """Other runs' images no run has mounted (a run killed before its clean-up), and all but
    the newest dependency stages: the store keeps what makes the next build fast."""
    mounted = {m["id"] for m in json.loads(podman("image", "mount", "--format", "json"))}
    tagged = [(name, i["Id"], i["Created"]) for i in json.loads(podman("images", "--format", "json"))
              for name in i.get("Names") or ()]
    runs = [name for name, id_, _ in tagged if name.startswith(f"{IMAGE_REPO}:test-") and name != current
            and id_ not in mounted]
    dependencies = sorted((t for t in tagged if t[0].startswith(DEPENDENCIES_REPO + ":")), key=lambda t: -t[2])
    kept = {id_ for _, id_, _ in dependencies[:KEEP_DEPENDENCIES]}
    for name in runs + [name for name, id_, _ in dependencies if id_ not in kept]:
        subprocess.run(["podman", "rmi", name], capture_output=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    workdir = tmp_path_factory.mktemp("image")
    tag = f"{IMAGE_REPO}:test-{os.getpid()}"
    with machine_lock():
        base = base_image(workdir)
        build = ["build", *BUILD_FLAGS, "--build-arg", f"BASE_IMAGE={base}", *pip_volumes(workdir)]
        before = images()
        started = time.monotonic()
        podman(*build, "--target", "dependencies", "-t", dependencies_tag(base), str(REPO), timeout=1200)
        podman(*build, "-t", tag, str(REPO), timeout=1200)
        # the stages' images nothing is built on (the build stage's, a replaced layer's)
        for id_ in (images("--filter", "dangling=true") & (images() - before)):
            subprocess.run(["podman", "rmi", id_], capture_output=True)
        forget_old_images(tag)
        [inspected] = json.loads(podman("image", "inspect", tag))
        print(f"image built in {time.monotonic() - started:.0f} s: {inspected['Size'] / 1e6:.0f} MB")
        root = Path(podman("image", "mount", tag).strip())
    try:
        yield Image(root, inspected["Config"], inspected["Healthcheck"]["Test"])
    finally:
        with machine_lock():  # another build may be using the layers this removes
            subprocess.run(["podman", "image", "unmount", tag], capture_output=True)
            subprocess.run(["podman", "rmi", tag], capture_output=True)


def test_the_image_runs_check_and_test_on_its_baked_in_specs_as_uid_10001_with_only_tmp_writable(image: Image) -> None:
    assert image.config["User"] == "10001:10001"
    env = dict(e.split("=", 1) for e in image.config["Env"])
    assert env["TMPDIR"] == env["HOME"] == WRITABLE
    # the mount the commands run in is read-only: only the tmpfs on /tmp takes writes
    assert os.statvfs(image.root).f_flag & os.ST_RDONLY
    probe = image.run("sh", "-c", 'id -u; id -g; for d in / /etc/voice-runtime/agents.d /opt/voice-runtime '
                      f'{WRITABLE}; do touch "$d/.probe" 2>/dev/null && echo "$d writable"; done')
    assert probe.stdout.split() == ["10001", "10001", WRITABLE, "writable"], probe.stdout + probe.stderr
    # no build tools in what ships: the virtualenv has no pip, setuptools or wheel
    site = image.root / "opt/voice-runtime/lib/python3.11/site-packages"
    assert not [p.name for p in site.iterdir() if p.name.split("-")[0] in ("pip", "setuptools", "wheel")]
    assert not (image.root / "opt/voice-runtime/bin/pip").exists()

    where = image.run("python", "-c", "import voice_runtime.session.testing as t; print(t.__file__)")
    assert where.stdout.startswith("/opt/voice-runtime/lib/"), where.stdout + where.stderr
    specs = image.config["Cmd"][0]  # the folder serve reads by default
    check = image.run("voice-runtime", "check", "--offline", specs)
    assert check.returncode == 0 and "2 agents OK" in check.stdout + check.stderr, check.stdout + check.stderr
    tests = image.run("voice-runtime", "test", specs)
    assert tests.returncode == 0 and "1 passed, 0 failed" in tests.stdout, tests.stdout + tests.stderr


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_images_own_command_serves_and_answers_healthz_readyz_and_its_healthcheck(image: Image,
                                                                                   tmp_path: Path) -> None:
    # the HEALTHCHECK probes the port the image exposes, which is serve's default
    healthcheck = image.healthcheck
    assert healthcheck[0] == "CMD" and "/healthz" in healthcheck[-1]
    [exposed] = image.config["ExposedPorts"]
    default = image.run("python", "-c", "import inspect, voice_runtime.commands.serve as command; "
                        "print(inspect.signature(command.serve).parameters['http_port'].default)")
    assert exposed == f"{default.stdout.strip()}/tcp", default.stdout + default.stderr
    image_port = exposed.split("/")[0]
    assert f"//127.0.0.1:{image_port}/healthz" in healthcheck[-1]
    # the image's ENTRYPOINT and CMD as a runtime starts them, not connecting to LiveKit; the
    # image's network is this machine's, so serve listens on a free port here, not on 8081
    port = free_port()
    command = [*image.config["Entrypoint"], *image.config["Cmd"], "--unregistered", "--http-port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(image.command(*command), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if _get(port, "/readyz") == 200:
                        break
                time.sleep(0.2)
            assert proc.poll() is None and _get(port, "/readyz") == 200, log.read_text()
            assert _get(port, "/healthz") == 200
            # the HEALTHCHECK, run inside the image as docker would, against this serve's port
            health = image.run(*healthcheck[1:-1], healthcheck[-1].replace(f":{image_port}/", f":{port}/"),
                               timeout=30)
            assert health.returncode == 0, health.stdout + health.stderr
            # the signal a runtime stops the container with drains serve, which exits 0
            proc.send_signal(signal.Signals[image.config["StopSignal"]])
            assert proc.wait(60) == 0, log.read_text()
        finally:
            stop_process(proc)
    assert "serving /etc/voice-runtime/agents.d" in log.read_text()
