"""Run what rendered Helm charts describe on this machine, pod by pod, as processes.

A pod here is one process tree in its own mount and UTS namespace (``unshare``; the tier runs as
root) with:

- its volumes (ConfigMaps, Secrets, emptyDirs, PVCs) written to a folder and bind-mounted at their
  ``mountPath`` (``subPath`` included), read-only where the manifest says so;
- an ``/etc/hosts`` that maps the cluster DNS names (``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc``,
  ``<svc>.<ns>.svc.cluster.local`` and StatefulSet pod names) to per-pod loopback addresses
  (127.0.x.y), plus whatever stand-ins the caller maps (an AWS endpoint to a local server);
- its env resolved from the manifests (``value``, ``valueFrom`` and ``envFrom``) on top of the
  image's, ``HOSTNAME`` set to the pod name as the kubelet does;
- its command and args as rendered, on the program its image maps to (``images.py``);
- its init containers first, each run to completion in order, as the kubelet does (one try: a
  failing one fails the pod with its log, where the kubelet would retry it with back-off).

Pods share the host's network: a preload library (``podnet.c``) moves wildcard binds onto the
pod's address, which is what a pod network namespace gives in Kubernetes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.images import Image, ImageMap

Manifest = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"
REPO = Path(__file__).resolve().parents[2]


class PodFailedError(RuntimeError):
    """A pod exited or never became ready; the message carries its log's tail."""


def find(docs: Iterable[Manifest], kind: str, name: str) -> Manifest:
    """The one manifest of this kind and name."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a pod's log."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Mount:
    """A folder or file bind-mounted into a pod."""

    source: Path
    target: str
    read_only: bool = False


@dataclass
class Pod:
    """One planned (then running) pod: its identity, address, files and process."""

    name: str
    namespace: str
    address: str
    labels: Mapping[str, str]
    spec: Manifest
    subdomain: str | None = None
    annotations: Mapping[str, str] | None = None
    folder: Path = Path()
    process: asyncio.subprocess.Process | None = None
    log: Path = Path()
    mounts: list[Mount] = field(default_factory=list)

    @property
    def container(self) -> Manifest:
        """The pod's (single) main container."""
        containers: list[Manifest] = self.spec["containers"]
        assert len(containers) == 1, f"{self.name}: the tier runs single-container pods"
        return containers[0]

    def port(self, port: int | str) -> int:
        """A container port, by number or by name."""
        if isinstance(port, int):
            return port
        for declared in self.container.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise KeyError(f"{self.name} has no port named {port}")

    def dns_names(self) -> list[str]:
        """The pod's own names: its hostname and, under a headless service, its DNS name."""
        names = [self.name]
        if self.subdomain:
            base = f"{self.name}.{self.subdomain}.{self.namespace}.svc"
            names += [base, f"{base}.{CLUSTER_DOMAIN}"]
        return names


class LocalCluster:
    """The pods of one tier run, their addresses and the objects they read."""

    def __init__(
        self,
        state: Path,
        docs: list[Manifest],
        images: ImageMap,
        podnet: Path,
        *,
        stand_ins: Mapping[str, str] | None = None,
        address_block: int,
    ) -> None:
        self.state = state
        self.docs = docs
        self.images = images
        self.podnet = podnet
        self.stand_ins = dict(stand_ins or {})
        self.pods: list[Pod] = []
        self._block = address_block
        self._next_host = 1
        self._created_dirs: list[Path] = []

    # --- objects --------------------------------------------------------------------------

    def add(self, docs: Iterable[Manifest]) -> None:
        """Add manifests (another chart, or objects an operator creates by hand)."""
        self.docs.extend(docs)

    def replace_data(self, kind: str, namespace: str, name: str, key: str, value: str) -> None:
        """Change one key of a ConfigMap (a stand-in where the rendered file cannot run here)."""
        doc = next(
            d
            for d in self.docs
            if d["kind"] == kind
            and d["metadata"]["name"] == name
            and d["metadata"].get("namespace") == namespace
        )
        doc["data"][key] = value

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        doc = next(
            (
                d
                for d in self.docs
                if d["kind"] == kind
                and d["metadata"]["name"] == name
                and d["metadata"].get("namespace", namespace) == namespace
            ),
            None,
        )
        if doc is None:
            raise KeyError(f"{kind} {namespace}/{name} is neither rendered nor provided")
        data = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        return data

    def configmap(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data."""
        return self._data("ConfigMap", namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded."""
        return self._data("Secret", namespace, name)

    # --- planning ---------------------------------------------------------------------------

    def _allocate(self) -> str:
        address = f"127.0.{self._block}.{self._next_host}"
        self._next_host += 1
        return address

    def plan(self, workload: Manifest, replicas: int | None = None) -> list[Pod]:
        """Pods for a Deployment, StatefulSet, Job or bare Pod (``replicas`` caps Deployments)."""
        kind = workload["kind"]
        meta = workload["metadata"]
        namespace = meta["namespace"]
        if kind == "Pod":  # a helm test hook: the manifest is its own template, named as is
            template = {"metadata": meta, "spec": workload["spec"]}
        else:
            template = workload["spec"]["template"]
        count = int(workload["spec"].get("replicas", 1)) if kind not in {"Job", "Pod"} else 1
        if replicas is not None:
            count = replicas
        pods = []
        for ordinal in range(count):
            if kind == "StatefulSet":
                name, subdomain = f"{meta['name']}-{ordinal}", workload["spec"]["serviceName"]
            elif kind == "Pod":
                name, subdomain = meta["name"], None
            else:
                name, subdomain = f"{meta['name']}-{ordinal}", None
            labels = dict(template["metadata"].get("labels", {}))
            if kind == "StatefulSet":
                labels["statefulset.kubernetes.io/pod-name"] = name
            pod = Pod(name, namespace, self._allocate(), labels, template["spec"], subdomain)
            pod.annotations = dict(template["metadata"].get("annotations", {}))
            pod.folder = self.state / "pods" / namespace / name
            pod.log = pod.folder / "log"
            self.pods.append(pod)
            pods.append(pod)
        return pods

    def debug_pod(self, namespace: str, name: str) -> Pod:
        """A bare pod (like ``kubectl run``) for a client that needs the cluster's names."""
        pod = Pod(name, namespace, self._allocate(), {}, {"containers": [{"name": name}]})
        pod.folder = self.state / "pods" / namespace / name
        pod.log = pod.folder / "log"
        self.pods.append(pod)
        return pod

    # --- names ----------------------------------------------------------------------------

    def _service_pods(self, service: Manifest) -> list[Pod]:
        """The Service's endpoints: its pods planned or running, not those that exited (an
        earlier test's Alertmanager), as Kubernetes drops a pod gone from the endpoints."""
        selector = service["spec"].get("selector") or {}
        namespace = service["metadata"]["namespace"]
        return [
            p
            for p in self.pods
            if p.namespace == namespace
            and selector
            and all(p.labels.get(k) == v for k, v in selector.items())
            and (p.process is None or p.process.returncode is None)
        ]

    def _service_addresses(self, service: Manifest) -> list[str]:
        return [p.address for p in self._service_pods(service)]

    def service_ports(self) -> str:
        """``DEPLOY_TIER_SERVICE_PORTS`` (podnet.c): kube-proxy's rewrite of each Service port
        its pods listen on under another number (the app's 80 to their 8000), for the pods
        planned now. A Service's name resolves to its pods' addresses (:meth:`hosts`)."""
        entries = []
        for service in (d for d in self.docs if d["kind"] == "Service"):
            for pod in self._service_pods(service):
                for declared in service["spec"].get("ports", []):
                    try:
                        target = pod.port(declared.get("targetPort", declared["port"]))
                    except KeyError:  # a port this pod does not declare: nothing listens
                        continue
                    if target != declared["port"]:
                        entries.append(f"{pod.address}:{declared['port']}:{target}")
        return " ".join(entries)

    def hosts(self, pod: Pod) -> str:
        """The pod's /etc/hosts: itself, every service and StatefulSet pod, the stand-ins.

        Unlike the kubelet's file, the pod's address resolves back to "localhost" (its first
        name): pods share the host's loopback here, so "localhost" must mean the pod's own
        address. Kept deliberately: a program that advertises its canonical host name instead
        of a configured one fails here (test_kafka's leader endpoints) where Kubernetes happens
        to give it the pod's DNS name.
        """
        lines = [
            "# Written by the deploy tier (tests/deploy): the cluster's DNS, one pod's view.",
            f"{pod.address}\tlocalhost {' '.join(pod.dns_names())}",
        ]
        for other in self.pods:
            if other is not pod and other.subdomain:
                lines.append(f"{other.address}\t{' '.join(other.dns_names()[1:])}")
        for service in (d for d in self.docs if d["kind"] == "Service"):
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            names = [f"{name}.{namespace}", f"{name}.{namespace}.svc"]
            names.append(f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
            if namespace == pod.namespace:
                names.insert(0, name)
            lines += [f"{a}\t{' '.join(names)}" for a in self._service_addresses(service)]
        lines += [f"{address}\t{name}" for name, address in self.stand_ins.items()]
        return "\n".join(lines) + "\n"

    # --- env and volumes ----------------------------------------------------------------------

    def _field(self, pod: Pod, path: str) -> str:
        fields = {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "status.podIP": pod.address,
            "status.hostIP": "127.0.0.1",
            "spec.nodeName": "localhost",
        }
        return fields[path]

    def env(self, pod: Pod, image: Image, container: Manifest | None = None) -> dict[str, str]:
        """A container's environment as the kubelet builds it (image env underneath); the main
        container's unless another (an init container) is given."""
        container = pod.container if container is None else container
        env = {**image.env, "HOSTNAME": pod.name}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.configmap(pod.namespace, source["configMapRef"]["name"])
            else:
                data = self.secret(pod.namespace, source["secretRef"]["name"])
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "valueFrom" in var:
                ref = var["valueFrom"]
                if "fieldRef" in ref:
                    env[var["name"]] = self._field(pod, ref["fieldRef"]["fieldPath"])
                elif "secretKeyRef" in ref:
                    key = ref["secretKeyRef"]
                    env[var["name"]] = self.secret(pod.namespace, key["name"])[key["key"]]
                elif "configMapKeyRef" in ref:
                    key = ref["configMapKeyRef"]
                    env[var["name"]] = self.configmap(pod.namespace, key["name"])[key["key"]]
                else:
                    raise NotImplementedError(f"{pod.name}: valueFrom {ref}")
            else:
                env[var["name"]] = ""
        return env

    def _volume_folder(self, pod: Pod, volume: Manifest) -> Path:
        folder = pod.folder / "volumes" / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for kind, getter in (("configMap", self.configmap), ("secret", self.secret)):
            if kind not in volume:
                continue
            source = volume[kind]
            data = getter(pod.namespace, source.get("name") or source.get("secretName"))
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            mode = int(source.get("defaultMode", 0o644))
            for item in items:
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[item["key"]], encoding="utf-8")
                target.chmod(mode)
        return folder

    def _mounts(self, pod: Pod, image: Image, container: Manifest) -> list[Mount]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mounts = [Mount(source, target) for source, target in image.mounts]
        for mount in container.get("volumeMounts", []):
            name = mount["name"]
            volume = volumes.get(name, {"name": name, "persistentVolumeClaim": {}})
            unsupported = {"hostPath", "projected", "downwardAPI", "csi"} & set(volume)
            if unsupported:
                raise NotImplementedError(f"{pod.name}: volume {name} is {unsupported}")
            source = self._volume_folder(pod, volume)
            if "subPath" in mount:
                source = source / mount["subPath"]
            mounts.append(Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
        # Parents first: an emptyDir inside a mounted folder lands in that folder's source.
        mounts.sort(key=lambda m: m.target.rstrip("/").count("/"))
        for index, mount in enumerate(mounts):
            self._make_mount_point(mount, mounts[:index])
        return mounts

    def _make_mount_point(self, mount: Mount, earlier: list[Mount]) -> None:
        target = Path(mount.target)
        for parent in reversed(earlier):
            if target.is_relative_to(parent.target):
                inside = parent.source / target.relative_to(parent.target)
                self._ensure(inside, mount.source.is_dir())
                return
        self._ensure(target, mount.source.is_dir(), record=True)

    def _ensure(self, path: Path, is_dir: bool, *, record: bool = False) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for created in reversed(missing):
            if created == path and not is_dir:
                created.touch()
            else:
                created.mkdir()
            if record:
                self._created_dirs.append(created)

    # --- running ----------------------------------------------------------------------------

    def _script(self, pod: Pod) -> Path:
        lines = [
            "#!/bin/bash",
            "# The deploy tier's pod set-up, inside the pod's namespaces.",
            "set -eu",
        ]
        lines.append(f"hostname {shlex.quote(pod.name)}")
        # The workspace the app images run from must stay visible when a volume covers one of
        # its parents (an emptyDir at /tmp hides a checkout under /tmp): set it aside first,
        # put it back after the volumes.
        hidden = [m for m in pod.mounts if REPO.is_relative_to(m.target) and m.target != "/"]
        aside = shlex.quote(str(pod.folder / "workspace"))
        if hidden:
            (pod.folder / "workspace").mkdir(parents=True, exist_ok=True)
            lines.append(f"mount --bind {shlex.quote(str(REPO))} {aside}")
        for mount in pod.mounts:
            source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
            lines.append(f"mount --bind {source} {target}")
            if mount.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        if hidden:
            repo = shlex.quote(str(REPO))
            lines += [f"mkdir -p {repo}", f"mount --bind {aside} {repo}"]
        lines.append('exec "$@"')
        script = pod.folder / "enter.sh"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return script

    async def _launch(self, pod: Pod, argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
        pod.folder.mkdir(parents=True, exist_ok=True)
        hosts = pod.folder / "hosts"
        hosts.write_text(self.hosts(pod), encoding="utf-8")
        pod.mounts.append(Mount(hosts, "/etc/hosts", read_only=True))
        script = self._script(pod)
        full_env = {
            **env,
            "LD_PRELOAD": str(self.podnet),
            "DEPLOY_TIER_POD_IP": pod.address,
            "DEPLOY_TIER_SERVICE_PORTS": self.service_ports(),
        }
        with pod.log.open("ab") as log:
            pod.process = await asyncio.create_subprocess_exec(
                # Killed with the test run, even a SIGKILLed one: no pod outlives the tier.
                "setpriv",
                "--pdeathsig",
                "KILL",
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "/bin/bash",
                str(script),
                *argv,
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, pod: Pod, stand_in_env: Mapping[str, str] | None = None) -> None:
        """Start a planned pod as rendered (plus env that stands in for AWS): its init containers
        to completion, in order, then its container."""
        container = pod.container
        for init in pod.spec.get("initContainers", []):
            await self._run_init(pod, init)
        if pod.spec.get("initContainers"):
            with pod.log.open("ab") as log:
                log.write(f"--- container {container['name']} ---\n".encode())
        image = await self.images.resolve(container["image"])
        pod.folder.mkdir(parents=True, exist_ok=True)
        pod.mounts = self._mounts(pod, image, container)
        argv = image.argv(container.get("command"), container.get("args"), pod.address)
        env = {**self.env(pod, image), **(stand_in_env or {})}
        await self._launch(pod, argv, env, image.workdir)

    async def _run_init(self, pod: Pod, init: Manifest, within_s: float = 120) -> None:
        """Run one init container to completion (its output goes to the pod's log).

        Its deadline stays well under the tests' own timeout (300 s), so an init container that
        hangs fails with its log tail instead of an opaque timeout of the session's fixture."""
        image = await self.images.resolve(init["image"])
        pod.folder.mkdir(parents=True, exist_ok=True)
        with pod.log.open("ab") as log:
            log.write(f"--- init container {init['name']} ---\n".encode())
        pod.mounts = self._mounts(pod, image, init)
        argv = image.argv(init.get("command"), init.get("args"), pod.address)
        await self._launch(pod, argv, self.env(pod, image, init), image.workdir)
        assert pod.process is not None
        try:
            code = await asyncio.wait_for(pod.process.wait(), within_s)
        except TimeoutError:
            await self.stop(pod)
            raise PodFailedError(
                f"{pod.name}: init container {init['name']} ran past {within_s}s:\n"
                f"{log_tail(pod.log)}"
            ) from None
        if code != 0:
            raise PodFailedError(
                f"{pod.name}: init container {init['name']} exited {code}:\n{log_tail(pod.log)}"
            )

    async def exec_in(
        self,
        pod: Pod,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        image: Image | None = None,
        within_s: float = 120,
    ) -> str:
        """Run a client in a bare pod (its own hosts; an image's files if given); its output."""
        base_env = dict(image.env) if image else dict(os.environ)
        pod.mounts = [Mount(source, target) for source, target in image.mounts] if image else []
        for mount in pod.mounts:
            self._make_mount_point(mount, [])
        await self._launch(pod, argv, {**base_env, **(env or {})}, REPO)
        await self._exited(pod, within_s, pod.name)
        return pod.log.read_text(errors="replace")

    async def exec_beside(
        self,
        pod: Pod,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        within_s: float = 120,
    ) -> str:
        """Run a command in a running pod's container, as ``kubectl exec`` does: the pod's
        address (so its ports are taken), hostname, env (plus ``env``) and volumes; its output."""
        image = await self.images.resolve(pod.container["image"])
        beside = Pod(pod.name, pod.namespace, pod.address, pod.labels, pod.spec, pod.subdomain)
        beside.folder = pod.folder / "exec"
        beside.log = beside.folder / "log"
        beside.log.unlink(missing_ok=True)  # this command's output only
        beside.mounts = [m for m in pod.mounts if m.target != "/etc/hosts"]  # _launch adds it
        await self._launch(beside, argv, {**self.env(pod, image), **(env or {})}, image.workdir)
        await self._exited(beside, within_s, f"exec in {pod.name}")
        return beside.log.read_text(errors="replace")

    async def run_job(self, job: Manifest, within_s: float = 120) -> Pod:
        """Run a Job's pod to completion, retrying up to its backoffLimit (a podFailurePolicy is
        not applied: every failed try is retried)."""
        attempts = int(job["spec"].get("backoffLimit", 6)) + 1
        pod = self.plan(job)[0]
        for attempt in range(1, attempts + 1):
            pod.mounts = []
            await self.start(pod)
            assert pod.process is not None
            code = await asyncio.wait_for(pod.process.wait(), within_s)
            if code == 0:
                return pod
            if attempt < attempts:
                await asyncio.sleep(min(2 * attempt, 10))
        raise PodFailedError(f"Job {job['metadata']['name']} failed:\n{log_tail(pod.log)}")

    async def run_pod(self, manifest: Manifest, within_s: float = 120) -> Pod:
        """Run a bare Pod (a ``helm test`` hook, ``restartPolicy: Never``) to completion, once:
        what ``helm test`` does with each hook."""
        (pod,) = self.plan(manifest)
        await self.start(pod)
        await self._exited(pod, within_s, pod.name)
        return pod

    async def _exited(self, pod: Pod, within_s: float, what: str) -> None:
        """Wait for a started pod's process to exit 0; stopped past ``within_s``, and either
        failure a :class:`PodFailedError` naming ``what`` with the log's tail."""
        assert pod.process is not None
        try:
            code = await asyncio.wait_for(pod.process.wait(), within_s)
        except TimeoutError:
            await self.stop(pod)
            raise PodFailedError(f"{what} ran past {within_s}s:\n{log_tail(pod.log)}") from None
        if code != 0:
            raise PodFailedError(f"{what} exited {code}:\n{log_tail(pod.log)}")

    async def probe(self, pod: Pod, probe: Manifest) -> bool:
        """One readiness check, as the kubelet does it (httpGet or tcpSocket)."""
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{pod.address}:{pod.port(get['port'])}{get.get('path', '/')}"
            try:
                async with httpx.AsyncClient(timeout=probe.get("timeoutSeconds", 1)) as http:
                    response = await http.get(url)
            except httpx.HTTPError:
                return False
            return 200 <= response.status_code < 400
        if "tcpSocket" in probe:
            port = pod.port(probe["tcpSocket"]["port"])
            try:
                _, writer = await asyncio.open_connection(pod.address, port)
            except OSError:
                return False
            writer.close()
            return True
        raise NotImplementedError(f"{pod.name}: probe {probe}")

    async def wait_ready(self, pod: Pod, within_s: float = 120) -> float:
        """Poll the container's readinessProbe until it passes; seconds it took."""
        probe = pod.container.get("readinessProbe") or pod.container.get("startupProbe")
        assert probe, f"{pod.name} declares no readinessProbe"
        loop = asyncio.get_running_loop()
        began = loop.time()
        while loop.time() - began < within_s:
            if pod.process is not None and pod.process.returncode is not None:
                raise PodFailedError(
                    f"{pod.name} exited {pod.process.returncode}:\n{log_tail(pod.log)}"
                )
            if await self.probe(pod, probe):
                return loop.time() - began
            await asyncio.sleep(0.5)
        raise PodFailedError(f"{pod.name} not ready after {within_s}s:\n{log_tail(pod.log)}")

    async def stop(self, pod: Pod, grace: float = 15) -> None:
        """SIGTERM the pod's process group, SIGKILL after the grace period."""
        process = pod.process
        if process is None or process.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                continue

    async def close(self) -> None:
        """Stop every pod (namespaces go with their processes), remove the mount points made."""
        await asyncio.gather(*(self.stop(p) for p in self.pods))
        for created in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                created.unlink() if created.is_file() else created.rmdir()
