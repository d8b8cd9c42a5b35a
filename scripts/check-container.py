#!/usr/bin/env python3
"""Static checks of docker-compose.yml and Dockerfile (no Docker engine needed).

Usage: check-container.py [--self-test] [COMPOSE DOCKERFILE]

Compose: parsed as YAML (anchors and merge keys resolved) and checked against
the Compose specification's structure for what this file uses: known top-level
and service keys; each service has an image (pinned tag) or a build;
depends_on names real services with valid conditions (service_healthy only on
services that have a health check); health checks in exec form; named volumes
declared; bind-mounted files exist; ports published on loopback only; the
local stack's three parts (etcd, moto, the service) are there.

Dockerfile: hadolint-style rules: multi-stage; base images pinned (no
`latest`); COPY --from names an earlier stage; apt-get with -y,
--no-install-recommends and list cleanup in the same RUN; no sudo, no ADD;
absolute WORKDIR; the final stage runs as a non-root USER, EXPOSEs 3000, has a
HEALTHCHECK and an exec-form ENTRYPOINT.

--self-test: breaks good inputs in known ways and checks each is caught.
Prints every problem; exits 1 if there is any.
"""
import json
import os
import re
import sys

import yaml

TOP = {"services", "volumes", "networks", "configs", "secrets", "name"}
SERVICE = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports",
           "volumes", "depends_on", "healthcheck", "restart", "user", "working_dir",
           "networks", "expose", "labels", "init", "stop_grace_period", "profiles"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}


def pinned(image):
    name = image.split("@")[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
    return "@sha256:" in image or (tag is not None and tag != "latest")


def check_compose(text, base_dir):
    problems = []
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"compose: not YAML: {e}"]
    if not isinstance(doc, dict):
        return ["compose: not a mapping"]
    for k in doc:
        if k not in TOP:
            problems.append(f"compose: unknown top-level key {k!r}")
    services = doc.get("services") or {}
    declared_volumes = set((doc.get("volumes") or {}).keys())
    for need in ("etcd", "moto", "cluster-state-service"):
        if need not in services:
            problems.append(f"compose: the local stack needs a {need!r} service")
    for name, svc in services.items():
        where = f"compose: service {name}"
        if not isinstance(svc, dict):
            problems.append(f"{where}: not a mapping")
            continue
        for k in svc:
            if k not in SERVICE:
                problems.append(f"{where}: unknown key {k!r}")
        if "image" not in svc and "build" not in svc:
            problems.append(f"{where}: needs an image or a build")
        image = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(svc.get("image", "")))
        if "image" in svc and "build" not in svc and not pinned(image):
            problems.append(f"{where}: image {svc['image']!r} is not pinned to a tag")
        if "restart" in svc and str(svc["restart"]).split(":")[0] not in RESTART:
            problems.append(f"{where}: bad restart policy {svc['restart']!r}")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                problems.append(f"{where}: depends on unknown service {dep!r}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in CONDITIONS:
                problems.append(f"{where}: bad depends_on condition {cond!r}")
            if cond == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{where}: waits for {dep} to be healthy, which has no healthcheck")
        hc = svc.get("healthcheck")
        if hc is not None:
            test = hc.get("test")
            if not (isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL", "NONE")):
                problems.append(f"{where}: healthcheck test must be a list starting with CMD, CMD-SHELL or NONE")
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            for k, v in env.items():
                if not isinstance(v, (str, int, float, bool)) and v is not None:
                    problems.append(f"{where}: environment {k} is not a scalar")
        for v in svc.get("volumes") or []:
            source = str(v).split(":")[0]
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.join(base_dir, source)):
                    problems.append(f"{where}: bind-mounted {source} does not exist")
            elif source not in declared_volumes:
                problems.append(f"{where}: volume {source!r} is not declared")
        for p in svc.get("ports") or []:
            if not re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(p)):
                problems.append(f"{where}: port {p!r} must be published on 127.0.0.1 only")
        for k in ("command", "entrypoint"):
            if k in svc and not isinstance(svc[k], (list, str)):
                problems.append(f"{where}: {k} must be a list or a string")
    return problems


def instructions(text):
    """Dockerfile instructions as (KEYWORD, arguments), continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        cur += " " + s.rstrip("\\").strip() if cur else s.rstrip("\\").strip()
        if not s.endswith("\\"):
            kw, _, args = cur.partition(" ")
            out.append((kw.upper(), args.strip()))
            cur = ""
    return out


def check_dockerfile(text):
    problems = []
    ins = instructions(text)
    stages, final = [], []
    args_before_from = {}
    for kw, args in ins:
        if kw == "ARG" and not stages:
            name, _, default = args.partition("=")
            args_before_from[name.strip()] = default.strip()
        if kw == "FROM":
            parts = args.split()
            # A base image given as a build argument is judged by its default.
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                           lambda m: args_before_from.get(m.group(1) or m.group(2), ""), parts[0])
            if image == parts[0] and "$" in image or not image:
                problems.append(f"Dockerfile: base image {parts[0]} has no default")
                image = "unknown:latest"
            if not pinned(image):
                problems.append(f"Dockerfile: base image {image} is not pinned to a tag")
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.append(parts[2])
            else:
                stages.append(None)
            final = []
        else:
            final.append((kw, args))
        if kw == "COPY" and "--from=" in args:
            src = re.search(r"--from=(\S+)", args).group(1)
            if src not in [s for s in stages[:-1] if s]:
                problems.append(f"Dockerfile: COPY --from={src} names no earlier stage")
        if kw == "ADD":
            problems.append("Dockerfile: use COPY, not ADD")
        if kw == "RUN":
            if re.search(r"\bsudo\b", args):
                problems.append("Dockerfile: no sudo in RUN")
            if "apt-get install" in args:
                if not re.search(r"apt-get install[^&;]*\s-y\b", args):
                    problems.append("Dockerfile: apt-get install needs -y")
                if "--no-install-recommends" not in args:
                    problems.append("Dockerfile: apt-get install needs --no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in args:
                    problems.append("Dockerfile: clean /var/lib/apt/lists in the same RUN")
        if kw == "WORKDIR" and not args.startswith("/"):
            problems.append(f"Dockerfile: WORKDIR {args} is not absolute")
    if len(stages) < 2:
        problems.append("Dockerfile: expected a multi-stage build")
    users = [a for k, a in final if k == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the final stage must run as a non-root USER")
    if not any(k == "EXPOSE" and "3000" in a.split() for k, a in final):
        problems.append("Dockerfile: the final stage must EXPOSE 3000")
    if not any(k == "HEALTHCHECK" for k, _ in final):
        problems.append("Dockerfile: the final stage needs a HEALTHCHECK")
    entry = [a for k, a in final if k == "ENTRYPOINT"]
    try:
        ok = bool(entry) and isinstance(json.loads(entry[-1]), list)
    except ValueError:
        ok = False
    if not ok:
        problems.append("Dockerfile: ENTRYPOINT must be in exec (JSON array) form")
    return problems


def self_test(compose, dockerfile, base_dir):
    assert check_compose(compose, base_dir) == [], check_compose(compose, base_dir)
    assert check_dockerfile(dockerfile) == [], check_dockerfile(dockerfile)
    breaks = [
        ("compose", compose.replace("condition: service_healthy", "condition: healthy", 1)),
        ("compose", compose.replace("motoserver/moto:5.1.18", "motoserver/moto", 1)),
        ("compose", compose.replace("${MOTO_IMAGE:-motoserver/moto:5.1.18}", "${MOTO_IMAGE:-motoserver/moto}", 1)),
        ("compose", compose.replace('"127.0.0.1:3000:3000"', '"3000:3000"', 1)),
        ("compose", compose.replace("./config/compose.toml:", "./config/missing.toml:", 1)),
        ("compose", compose.replace("  moto:\n", "  motto:\n", 1)),
        ("compose", compose + "\nbogus: 1\n"),
        ("compose", compose.replace("restart: unless-stopped", "restart: sometimes", 1)),
        ("compose", "services: [unclosed"),
        ("dockerfile", dockerfile.replace("USER 10001:10001", "USER root")),
        ("dockerfile", dockerfile.replace("EXPOSE 3000", "EXPOSE 8080")),
        ("dockerfile", dockerfile.replace("--no-install-recommends ", "", 1)),
        ("dockerfile", re.sub(r"(?m)^HEALTHCHECK.*\n.*\n", "", dockerfile)),
        ("dockerfile", dockerfile.replace("RUNTIME_IMAGE=debian:bookworm-slim", "RUNTIME_IMAGE=debian:latest")),
        ("dockerfile", dockerfile.replace("ARG RUST_IMAGE=rust:1-bookworm", "ARG RUST_IMAGE")),
        ("dockerfile", dockerfile.replace("COPY --from=build", "COPY --from=builder")),
        ("dockerfile", re.sub(r"(?m)^ENTRYPOINT .*$", "ENTRYPOINT cluster-state-service", dockerfile)),
    ]
    for kind, broken in breaks:
        found = check_compose(broken, base_dir) if kind == "compose" else check_dockerfile(broken)
        assert found, f"a broken {kind} passed the checks:\n{broken}"
    print(f"self-test: {len(breaks)} broken variants caught")


def main(argv):
    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    test = "--self-test" in argv
    args = [a for a in argv if a != "--self-test"]
    compose_path = args[0] if args else os.path.join(base, "docker-compose.yml")
    docker_path = args[1] if len(args) > 1 else os.path.join(base, "Dockerfile")
    compose, dockerfile = open(compose_path).read(), open(docker_path).read()
    base_dir = os.path.dirname(os.path.abspath(compose_path))
    if test:
        self_test(compose, dockerfile, base_dir)
    problems = check_compose(compose, base_dir) + check_dockerfile(dockerfile)
    for p in problems:
        print(p)
    print(f"{compose_path}, {docker_path}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
