"""Checks compose/docker-compose.yml where `docker compose config` cannot run: the file parses,
every service the stack needs is there and wired as the README says. Usage:
python3 scripts/check-compose.py compose/docker-compose.yml"""

import pathlib
import sys

import yaml

path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "compose/docker-compose.yml")
compose = yaml.safe_load(path.read_text())
services = compose["services"]
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


for name in ["postgres", "redis", "jaeger", "auth", "conversation", "runtime", "runtime-proxy",
             "edge-1", "edge-2", "lb"]:
    check(name in services, f"service {name} is missing")

components = {"auth": "auth", "conversation": "conversation", "runtime": "runtime-stub",
              "runtime-proxy": "runtime-proxy", "edge-1": "edge", "edge-2": "edge"}
for name, command in components.items():
    service = services.get(name, {})
    env = service.get("environment") or {}
    check(service.get("command") == [command], f"{name} must run `crawbl {command}`")
    check(service.get("build", {}).get("dockerfile") == "compose/Dockerfile",
          f"{name} must be built with compose/Dockerfile")
    check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://jaeger:4317",
          f"{name} must export traces to jaeger:4317")
    if name == "runtime":
        for secret in ["CRAWBL_SERVICE_TOKEN", "DATABASE_URL", "REDIS_URL"]:
            check(secret not in env, f"the runtime must not get {secret}")
    else:
        check(bool(env.get("CRAWBL_SERVICE_TOKEN")), f"{name} needs CRAWBL_SERVICE_TOKEN")
    if name in ("auth", "conversation"):
        check(str(env.get("DATABASE_URL", "")).startswith("postgres://"), f"{name} needs Postgres")
    if name.startswith("edge"):
        check("DATABASE_URL" not in env, f"{name}: the edge never touches the database")
        check(env.get("REDIS_URL"), f"{name} needs Redis to reach the other edge")

for name, service in services.items():
    depends = service.get("depends_on") or []
    for dependency in depends if isinstance(depends, list) else depends.keys():
        check(dependency in services, f"{name} depends on unknown service {dependency}")

lb = services.get("lb", {})
check("8080:8080" in (lb.get("ports") or []), "the load balancer must publish 8080")
mounts = [volume.split(":")[0] for volume in lb.get("volumes") or []]
check("./nginx.conf" in mounts, "the load balancer must mount ./nginx.conf")
nginx = (path.parent / "nginx.conf").read_text()
for needle in ["server edge-1:8080", "server edge-2:8080", "proxy_set_header Upgrade",
               "ip_hash"]:
    check(needle in nginx, f"nginx.conf lacks `{needle}`")
check(str(services.get("jaeger", {}).get("image", "")).startswith("jaegertracing/all-in-one"),
      "the trace viewer is Jaeger all-in-one (OTLP on 4317)")

if problems:
    print("\n".join(f"compose: {problem}" for problem in problems))
    sys.exit(1)
print(f"compose: {path} is well formed ({len(services)} services)")
