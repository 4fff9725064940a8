#!/usr/bin/env python3
"""Checks deploy/ without a cluster: renders the Kustomize base and every
overlay (the subset of Kustomize they use; anything else is an error, so
this renderer cannot drift from what the files say), validates every object
against the Kubernetes schemas (`pip install kubernetes-validate`, offline)
and the two CRDs it ships (OpenShift Route, Prometheus ServiceMonitor)
against their required fields, cross-checks references (Services select
pods, routes and ingresses name Services and ports, probes name ports,
volumes name ConfigMaps, the shutdown deadline fits the grace period), and
lints the Grafana dashboard against the metric names the proxy registers.

Usage: python3 deploy/check.py [--kubernetes-version 1.30.0]
Prints one line per rendered object; exits 1 with every problem listed.
"""

import argparse
import json
import os
import re
import sys

try:
    import kubernetes_validate
    import yaml
except ImportError as missing:
    sys.exit(f"{missing.name} is missing: pip install kubernetes-validate (brings PyYAML)")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OVERLAYS = ["kubernetes/base", "kubernetes/overlays/openshift", "kubernetes/overlays/redis-sentinel"]
# Created by the operator (deploy/README.md), never committed.
EXTERNAL_SECRETS = {"maas-secrets", "maas-tls"}
KNOWN_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "images", "patches"}

problems = []


def problem(text):
    problems.append(text)


def render(directory):
    """The objects `kubectl apply -k directory` would create."""
    path = os.path.join(directory, "kustomization.yaml")
    with open(path) as f:
        kustomization = yaml.safe_load(f)
    unknown = set(kustomization) - KNOWN_KUSTOMIZE_FIELDS
    if unknown:
        problem(f"{os.path.relpath(path, ROOT)}: check.py does not render {sorted(unknown)}")
    objects = []
    for resource in kustomization.get("resources", []):
        target = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(target):
            objects += render(target)
        elif os.path.isfile(target):
            with open(target) as f:
                objects += [doc for doc in yaml.safe_load_all(f) if doc]
        else:
            problem(f"{os.path.relpath(path, ROOT)}: resource {resource} does not exist")
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, file = entry.partition("=") if "=" in entry else (os.path.basename(entry), "", entry)
            with open(os.path.join(directory, file)) as f:
                data[key] = f.read()
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in containers(obj):
                if container.get("image") == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load(patch["patch"])
        target = patch["target"]
        where = os.path.relpath(path, ROOT)
        matches = lambda o: o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
        if not any(matches(o) for o in objects):
            problem(f"{where}: the patch's target {target} matches nothing")
        elif isinstance(body, list):
            for obj in filter(matches, objects):
                json_patch(obj, body, where)
        elif body.get("$patch") == "delete":
            objects = [o for o in objects if not matches(o)]
        else:
            problem(f"{where}: check.py renders only `$patch: delete` and JSON 6902 (remove, add, replace) patches")
    return objects


def json_patch(obj, operations, where):
    """Applies JSON 6902 `remove`, `add` and `replace` operations, as kustomize does; a path that
    does not exist is an error there too."""
    for operation in operations:
        op, pointer = operation.get("op"), operation.get("path", "")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        parent = obj
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last = int(parts[-1]) if isinstance(parent, list) else parts[-1]
            if op == "remove":
                del parent[last]
            elif op == "replace":
                parent[last]  # must exist
                parent[last] = operation["value"]
            elif op == "add":
                if isinstance(parent, list):
                    parent.insert(last, operation["value"])
                else:
                    parent[last] = operation["value"]
            else:
                problem(f"{where}: check.py does not render the JSON patch operation {op}")
        except (KeyError, IndexError, ValueError, TypeError):
            problem(f"{where}: JSON patch {op} {pointer}: no such path in {obj['kind']} {obj['metadata']['name']}")


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec") if obj["kind"] in ("Deployment", "StatefulSet") else None


def containers(obj):
    spec = pod_spec(obj)
    return spec.get("containers", []) if spec else []


def require(obj, dotted, where):
    value = obj
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            problem(f"{where}: {dotted} is required")
            return None
        value = value[part]
    return value


def validate_crd(obj, where):
    if obj["kind"] == "Route" and obj["apiVersion"] == "route.openshift.io/v1":
        require(obj, "spec.to.name", where)
        if require(obj, "spec.to.kind", where) not in (None, "Service"):
            problem(f"{where}: spec.to.kind must be Service")
        termination = obj["spec"].get("tls", {}).get("termination")
        if termination not in ("edge", "passthrough", "reencrypt"):
            problem(f"{where}: spec.tls.termination must be edge, passthrough or reencrypt")
        return True
    if obj["kind"] == "ServiceMonitor" and obj["apiVersion"] == "monitoring.coreos.com/v1":
        require(obj, "spec.selector.matchLabels", where)
        for endpoint in require(obj, "spec.endpoints", where) or []:
            if "port" not in endpoint:
                problem(f"{where}: every endpoint names a port")
        return True
    return False


def cross_check(objects, overlay):
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    workloads = list(by_kind.get("Deployment", {}).values()) + list(by_kind.get("StatefulSet", {}).values())
    services = by_kind.get("Service", {})
    for name, service in services.items():
        selector = service["spec"].get("selector", {})
        selected = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        if not selected:
            problem(f"{overlay}: Service {name} selects no pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and not any(
                    any(p.get("name") == target for c in containers(w) for p in c.get("ports", [])) for w in selected):
                problem(f"{overlay}: Service {name} targets port {target}, which its pods do not name")

    def service_port(name, port, where):
        if name not in services:
            problem(f"{where}: no Service {name}")
        elif port not in [p.get("name") for p in services[name]["spec"]["ports"]]:
            problem(f"{where}: Service {name} has no port {port}")

    for name, route in by_kind.get("Route", {}).items():
        service_port(route["spec"]["to"]["name"], route["spec"]["port"]["targetPort"], f"{overlay}: Route {name}")
    for name, ingress in by_kind.get("Ingress", {}).items():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service_port(backend["name"], backend["port"]["name"], f"{overlay}: Ingress {name}")
    for name, monitor in by_kind.get("ServiceMonitor", {}).items():
        matched = [s for s in services.values()
                   if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
        if not matched:
            problem(f"{overlay}: ServiceMonitor {name} selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            if not any(endpoint["port"] in [p.get("name") for p in s["spec"]["ports"]] for s in matched):
                problem(f"{overlay}: ServiceMonitor {name} scrapes port {endpoint['port']}, which no selected Service has")
    for workload in workloads:
        where = f"{overlay}: {workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                problem(f"{where}: volume {volume['name']} names a missing ConfigMap")
        for container in containers(workload):
            names = {p.get("name") for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in names:
                    problem(f"{where}: {probe} uses port {port}, which the container does not name")
            for env in container.get("env", []):
                secret = env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                if secret and secret not in EXTERNAL_SECRETS and secret not in by_kind.get("Secret", {}):
                    problem(f"{where}: env {env['name']} reads Secret {secret}, which nothing creates")
    # OpenShift's restricted-v2 SCC admits only the namespace's own uid range.
    if "openshift" in overlay:
        for workload in workloads:
            spec = pod_spec(workload)
            fixed = [f"fsGroup {spec['securityContext']['fsGroup']}"] if "fsGroup" in spec.get("securityContext", {}) else []
            for container in containers(workload):
                for field in ("runAsUser", "runAsGroup"):
                    if field in container.get("securityContext", {}):
                        fixed.append(f"{container['name']} {field} {container['securityContext'][field]}")
            if fixed:
                problem(f"{overlay}: {workload['kind']} {workload['metadata']['name']} fixes {', '.join(fixed)}, "
                        "which the restricted-v2 SCC refuses")
    # The proxy drains within the pod's grace period.
    proxy = by_kind.get("Deployment", {}).get("maas-proxy")
    config = by_kind.get("ConfigMap", {}).get("maas-config")
    if proxy and config:
        settings = yaml.safe_load(config["data"]["maas.yaml"])
        deadline = settings.get("proxy", {}).get("shutdown_timeout_secs", 30)
        grace = pod_spec(proxy)["terminationGracePeriodSeconds"]
        pre_stop = containers(proxy)[0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pre_stop + deadline >= grace:
            problem(f"{overlay}: preStop {pre_stop} s + shutdown_timeout_secs {deadline} s must stay below "
                    f"terminationGracePeriodSeconds {grace} s, or streams are killed")


METRIC = r"(?:maas|llm|gen_ai)_[a-z_]+"


def registered_metrics():
    """The metric families `maas proxy` registers (proxy/src/record/metrics.rs,
    and the GenAI histograms of proxy/src/record/genai.rs, by their
    `prometheus:` names), and the budget gauges the admin API serves
    (admin-api/src/budgets.rs)."""
    with open(os.path.join(ROOT, "proxy/src/record/metrics.rs")) as f:
        names = set(re.findall(r'"((?:maas|llm)_[a-z_]+)"', f.read()))
    with open(os.path.join(ROOT, "proxy/src/record/genai.rs")) as f:
        names |= set(re.findall(r'prometheus: "(gen_ai_[a-z_]+)"', f.read()))
    with open(os.path.join(ROOT, "admin-api/src/budgets.rs")) as f:
        names |= set(re.findall(r'"(maas_budget_[a-z_]+)"', f.read()))
    return names


def genai_labels():
    """The GenAI series' label names, which expressions group by."""
    with open(os.path.join(ROOT, "proxy/src/record/genai.rs")) as f:
        source = f.read()
    return set(re.findall(r'"(gen_ai_[a-z_]+|error_type)"', source)) - registered_metrics()


def lint_dashboard(path):
    where = os.path.relpath(path, ROOT)
    with open(path) as f:
        dashboard = json.load(f)
    for field in ("uid", "title", "panels", "templating", "schemaVersion"):
        if field not in dashboard:
            problem(f"{where}: no {field}")
    known = registered_metrics()
    labels = genai_labels()
    ids, used = set(), set()
    for panel in dashboard.get("panels", []):
        if panel.get("id") in ids:
            problem(f"{where}: panel id {panel.get('id')} twice")
        ids.add(panel.get("id"))
        for field in ("title", "type", "gridPos", "targets"):
            if field not in panel:
                problem(f"{where}: panel {panel.get('id')} has no {field}")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problem(f"{where}: panel {panel.get('title')}: unbalanced expression {expr}")
            for name in re.findall(rf"\b({METRIC})", expr):
                if name in labels:
                    continue
                family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in known else name
                if family not in known:
                    problem(f"{where}: panel {panel.get('title')}: neither the proxy nor the admin API exports {name}")
                used.add(family)
    for variable in dashboard.get("templating", {}).get("list", []):
        for name in re.findall(rf"\b({METRIC})", str(variable.get("query", ""))):
            if name not in known:
                problem(f"{where}: variable {variable.get('name')}: the proxy exports no metric {name}")
    return used, known


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes-version", default="1.30.0")
    args = parser.parse_args()
    for overlay in OVERLAYS:
        objects = render(os.path.join(HERE, overlay))
        for obj in objects:
            where = f"{overlay}: {obj['kind']} {obj['metadata']['name']}"
            if not validate_crd(obj, where):
                try:
                    kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    problem(f"{where}: {error.message} at {'.'.join(map(str, error.path))}")
                except kubernetes_validate.SchemaNotFoundError:
                    problem(f"{where}: no schema for {obj['apiVersion']} {obj['kind']}")
            print(where)
        cross_check(objects, overlay)
    used, known = lint_dashboard(os.path.join(HERE, "grafana/maas-dashboard.json"))
    print(f"grafana/maas-dashboard.json: {len(used)} of {len(known)} proxy metric families charted")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
