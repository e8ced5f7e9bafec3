#!/usr/bin/env python3
"""Renders every overlay of deploy/kubernetes with `kubectl kustomize`, validates each object
against the official Kubernetes schemas (PyPI kubernetes-validate, offline, strict: unknown fields
are errors), then checks what a schema cannot: replicas, probes, graceful shutdown, security
contexts, RBAC, the runtimes' NetworkPolicy, and that every reference points at a rendered object.

Usage: python3 scripts/check-kubernetes.py [overlay ...]   (default: every overlay)
Exits non-zero with a message on the first overlay that fails; never skips silently.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
# The Kubernetes version the schemas are taken from (kubernetes-validate 1.37 ships it).
KUBERNETES_VERSION = "1.37.0"
# What runtime-proxy's kubernetes driver calls (services/runtime-proxy/src/kubernetes.rs).
RUNTIME_PROXY_RULES = {
    "pods": {"create", "get", "list", "watch", "delete"},
    "services": {"create", "get", "list", "delete"},
}
# Secrets each component may see; the edge and runtime-proxy never get the database.
ALLOWED_SECRETS = {
    "auth": {"DATABASE_URL", "REDIS_URL", "CRAWBL_SERVICE_TOKEN"},
    "conversation": {"DATABASE_URL", "REDIS_URL", "CRAWBL_SERVICE_TOKEN"},
    "runtime-proxy": {"REDIS_URL", "CRAWBL_SERVICE_TOKEN"},
    "edge": {"REDIS_URL", "CRAWBL_SERVICE_TOKEN"},
}


class Failure(Exception):
    pass


def drain_bound_seconds():
    """DRAIN_BOUND from infra/src/shutdown.rs: how long a component drains after SIGTERM."""
    source = (ROOT / "infra" / "src" / "shutdown.rs").read_text()
    match = re.search(r"DRAIN_BOUND: Duration = Duration::from_secs\((\d+)\)", source)
    if not match:
        raise Failure("cannot find DRAIN_BOUND in infra/src/shutdown.rs")
    return int(match.group(1))


def render(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise Failure(
            "kubectl is not installed: it renders the manifests (kubectl kustomize); install "
            "kubectl (it includes kustomize) and run again"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise Failure(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_schemas(objects):
    import kubernetes_validate

    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise Failure(f"{name} does not validate: {error.message} at {list(error.path)}")
        except Exception as error:  # unknown kinds, missing schema, …
            raise Failure(f"{name} cannot be validated: {error}")


def check(condition, message):
    if not condition:
        raise Failure(message)


def by_kind(objects, kind):
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def check_deployments(objects, drain):
    # Every component is a Deployment but runtime-proxy, a StatefulSet (its replicas are shards).
    deployments = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    check(
        set(deployments) == set(ALLOWED_SECRETS),
        f"expected workloads {sorted(ALLOWED_SECRETS)}, got {sorted(deployments)}",
    )
    check(
        "runtime-proxy" in by_kind(objects, "StatefulSet"),
        "runtime-proxy must be a StatefulSet: callers address each replica by name",
    )
    config_maps = by_kind(objects, "ConfigMap")
    secrets = by_kind(objects, "Secret")
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        check(spec.get("replicas", 1) >= 2, f"{name} has fewer than 2 replicas")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        security = pod.get("securityContext", {})
        check(security.get("runAsNonRoot") is True, f"{name}: pod must set runAsNonRoot")
        check(security.get("runAsUser", 0) != 0, f"{name}: pod must not run as uid 0")
        wants_token = name == "runtime-proxy"
        if wants_token:
            check(pod.get("serviceAccountName") == "runtime-proxy", f"{name}: service account")
        else:
            check(
                pod.get("automountServiceAccountToken") is False,
                f"{name}: does not call the API, so must not mount a service-account token",
            )
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            check("readinessProbe" in container, f"{where} has no readiness probe")
            check("livenessProbe" in container, f"{where} has no liveness probe")
            readiness = container["readinessProbe"]
            if name == "edge":
                check(readiness.get("httpGet", {}).get("path") == "/readyz", f"{where}: /readyz")
            else:
                check("grpc" in readiness, f"{where}: readiness must be the gRPC health check")
            pre_stop = container.get("lifecycle", {}).get("preStop")
            check(pre_stop is not None, f"{where} has no preStop")
            pause = pre_stop.get("sleep", {}).get("seconds", 0)
            check(
                grace >= pause + drain,
                f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause} s + drain {drain} s",
            )
            context = container.get("securityContext", {})
            check(context.get("readOnlyRootFilesystem") is True, f"{where}: read-only root fs")
            check(context.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation")
            check(context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL")
            check("requests" in container.get("resources", {}), f"{where}: resource requests")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                check(ref["name"] in config_maps or ref["name"] in secrets, f"{where}: {ref}")
            seen_secrets = set()
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = secrets.get(ref["name"])
                    check(secret is not None, f"{where}: Secret {ref['name']} is not rendered")
                    check(ref["key"] in secret.get("data", {}), f"{where}: no key {ref['key']}")
                    seen_secrets.add(ref["key"])
            extra = seen_secrets - ALLOWED_SECRETS[name]
            check(not extra, f"{where} gets secrets it does not use: {sorted(extra)}")
    return deployments, config_maps


def check_edge_scaling(objects):
    hpa = by_kind(objects, "HorizontalPodAutoscaler").get("edge")
    check(hpa is not None, "no HorizontalPodAutoscaler for the edge")
    check(hpa["spec"]["scaleTargetRef"]["name"] == "edge", "the HPA must scale the edge")
    check(hpa["spec"].get("minReplicas", 1) >= 2, "the edge HPA must keep 2 or more edges")
    budgets = by_kind(objects, "PodDisruptionBudget")
    check("edge" in budgets, "no PodDisruptionBudget for the edge")
    for name, budget in budgets.items():
        check(budget["spec"].get("minAvailable", 0) >= 1, f"PDB {name}: minAvailable >= 1")


def check_services(objects, deployments):
    services = by_kind(objects, "Service")
    for name, deployment in deployments.items():
        check(name in services, f"{name} has no Service")
        selector = services[name]["spec"]["selector"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        check(
            all(labels.get(key) == value for key, value in selector.items()),
            f"Service {name} does not select its pods",
        )


def check_runtime_proxy_shards(objects, config_maps, deployments):
    """Callers shard workspaces over RUNTIME_PROXY_URL: it must name every replica, and only them."""
    config = next(iter(config_maps.values()))["data"]
    proxy = deployments["runtime-proxy"]["spec"]
    replicas = proxy.get("replicas", 1)
    service = by_kind(objects, "Service")["runtime-proxy"]["spec"]
    check(service.get("clusterIP") == "None", "runtime-proxy's Service must be headless")
    check(proxy.get("serviceName") == "runtime-proxy", "the StatefulSet must name its Service")
    port = next(p["port"] for p in service["ports"] if p["name"] == "grpc")
    expected = [f"http://runtime-proxy-{i}.runtime-proxy:{port}" for i in range(replicas)]
    listed = [address.strip() for address in config.get("RUNTIME_PROXY_URL", "").split(",")]
    check(
        listed == expected,
        f"RUNTIME_PROXY_URL must list the {replicas} runtime-proxy replicas: {expected}, is {listed}",
    )


def check_runtime_access(objects, config_maps, deployments):
    config = next(iter(config_maps.values()))["data"]
    role = by_kind(objects, "Role").get("runtime-proxy")
    check(role is not None, "no Role for runtime-proxy")
    rules = {}
    for rule in role["rules"]:
        check(rule.get("apiGroups") == [""], "runtime-proxy's Role: core API group only")
        for resource in rule["resources"]:
            rules.setdefault(resource, set()).update(rule["verbs"])
    check(
        rules == RUNTIME_PROXY_RULES,
        f"runtime-proxy's Role must be exactly {RUNTIME_PROXY_RULES}, is {rules}",
    )
    binding = by_kind(objects, "RoleBinding").get("runtime-proxy")
    check(binding and binding["subjects"][0]["name"] == "runtime-proxy", "RoleBinding")
    check("runtime-proxy" in by_kind(objects, "ServiceAccount"), "ServiceAccount runtime-proxy")
    check(config.get("RUNTIME_DRIVER") == "kubernetes", "runtime-proxy must use the kubernetes driver")

    namespace = deployments["runtime-proxy"]["metadata"]["namespace"]
    check(
        config.get("RUNTIME_K8S_NAMESPACE") == namespace,
        "RUNTIME_K8S_NAMESPACE must be runtime-proxy's namespace (its Role is namespaced)",
    )
    image = deployments["runtime-proxy"]["spec"]["template"]["spec"]["containers"][0]["image"]
    check(
        config.get("RUNTIME_K8S_IMAGE") == image,
        f"RUNTIME_K8S_IMAGE {config.get('RUNTIME_K8S_IMAGE')} is not the image {image}",
    )

    policy = by_kind(objects, "NetworkPolicy").get("runtimes")
    check(policy is not None, "no NetworkPolicy for runtime pods")
    spec = policy["spec"]
    check(
        spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "runtime"},
        "the NetworkPolicy must select the runtime pods",
    )
    check(set(spec["policyTypes"]) == {"Ingress", "Egress"}, "policy must restrict both ways")
    (ingress,) = spec["ingress"]
    check(
        ingress["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "runtime-proxy"}}}],
        "only runtime-proxy may reach runtimes",
    )
    check(
        [port["port"] for port in ingress["ports"]] == [int(config["RUNTIME_K8S_PORT"])],
        "the NetworkPolicy must open exactly RUNTIME_K8S_PORT",
    )
    for rule in spec["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                check(
                    {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
                    <= set(peer["ipBlock"].get("except", []))
                    or peer["ipBlock"]["cidr"] == "::/0",
                    "internet egress must exclude the private and link-local ranges",
                )
            else:
                check(
                    {port["port"] for port in rule["ports"]} == {53},
                    "in-cluster egress is DNS only",
                )


def check_overlay(overlay, drain):
    objects = render(overlay)
    validate_schemas(objects)
    deployments, config_maps = check_deployments(objects, drain)
    check(len(config_maps) == 1, "expected one ConfigMap")
    check_edge_scaling(objects)
    check_services(objects, deployments)
    check_runtime_access(objects, config_maps, deployments)
    check_runtime_proxy_shards(objects, config_maps, deployments)
    return len(objects)


def main():
    names = sys.argv[1:] or sorted(path.name for path in OVERLAYS.iterdir() if path.is_dir())
    try:
        drain = drain_bound_seconds()
        for name in names:
            count = check_overlay(OVERLAYS / name, drain)
            print(f"{name}: {count} objects valid against Kubernetes {KUBERNETES_VERSION}, checks ok")
    except Failure as failure:
        print(f"kubernetes manifests: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
