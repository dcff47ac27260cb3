#!/usr/bin/env python3
"""Checks the deployment files: the Helm chart (lint, render with default and non-default values,
schema, failure cases, the chart's copies of monitoring/catalog/adapter files), docker-compose.yml
and the Dockerfile. Docker and a Kubernetes cluster are not needed: Helm's own engine
(helm-python-sdk, Helm v4) renders the chart offline, and its YAML parser reads every file.

    python3 tests/deploy/check_chart.py                    # every check
    python3 tests/deploy/check_chart.py --materialise DIR  # only render, and write the pod files

--materialise DIR renders the default and the non-default values and writes, for each, what a
pod would see: shenguan.toml as the init container assembles it (ConfigMap + token hashes from
the Secret) and the /etc/shenguan tree as the ConfigMaps are mounted (DIR/<name>/etc/<volume>/…).
tests/deploy.rs boots the real gateway on those files.

Exit status: 0 when every check passes, 1 when one fails, 2 when a required Python module is
missing. Every check is printed, so the output explains a failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "shenguan"

try:
    import helm_python as helm
except ImportError as exc:  # never a skip: the chart must be checked
    print(
        "FAIL: the Python module helm_python is missing ({}).\n"
        "      It is Helm v4's engine on PyPI: python3 -m pip install helm-python-sdk\n"
        "      (scripts/test.sh installs it).".format(exc)
    )
    sys.exit(2)

FAILURES: list[str] = []
CHECKS = 0


def check(ok: bool, what: str, detail: str = "") -> bool:
    global CHECKS
    CHECKS += 1
    if ok:
        print(f"ok    {what}")
    else:
        FAILURES.append(what + (f": {detail}" if detail else ""))
        print(f"FAIL  {what}" + (f"\n      {detail}" if detail else ""))
    return ok


def section(title: str) -> None:
    print(f"\n== {title}")


# ---------------------------------------------------------------------------------------------
# YAML: Helm's own parser (sigs.k8s.io/yaml), so no other module is needed.


def load_yaml(text: str, what: str):
    """One YAML mapping document, parsed as Helm parses values and manifests."""
    try:
        return helm.values_from_yaml(text)
    except helm.HelmError as exc:
        check(False, f"{what} parses as YAML", str(exc))
        return None


def yaml_documents(text: str) -> list[str]:
    docs, current = [], []
    for line in text.splitlines():
        if re.match(r"^---\s*(#.*)?$", line):
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    return [d for d in docs if re.search(r"^[^#\s]", d, re.M)]


# ---------------------------------------------------------------------------------------------
# Rendering


def render(values: dict | None, what: str) -> list[dict] | None:
    """Renders the chart (with Helm's schema validation) and parses every manifest."""
    with helm.Chart.load(CHART) as chart:
        try:
            out = chart.render(values, name="sg", namespace="gov")
        except helm.HelmError as exc:
            check(False, f"{what}: the chart renders", str(exc))
            return None
    check(True, f"{what}: the chart renders")
    manifests = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            check(bool(text.strip()), f"{what}: NOTES.txt is rendered")
            continue
        for doc in yaml_documents(text):
            obj = load_yaml(doc, f"{what}: {path}")
            if obj is None:
                continue
            ok = all(k in obj for k in ("apiVersion", "kind", "metadata")) and obj["metadata"].get("name")
            check(bool(ok), f"{what}: {path} is a Kubernetes object ({obj.get('kind')})",
                  "missing apiVersion, kind or metadata.name")
            obj["_template"] = path
            manifests.append(obj)
    return manifests


def render_fails(values: dict, expect: str, what: str) -> None:
    with helm.Chart.load(CHART) as chart:
        try:
            chart.render(values, name="sg", namespace="gov")
        except helm.HelmError as exc:
            check(re.search(expect, str(exc), re.S) is not None,
                  f"refused: {what}", f"the error does not mention /{expect}/: {exc}")
            return
    check(False, f"refused: {what}", "the chart rendered")


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, what: str, suffix: str | None = None) -> dict:
    found = [m for m in by_kind(manifests, kind)
             if suffix is None or m["metadata"]["name"].endswith(suffix)]
    check(len(found) == 1, f"{what}: exactly one {kind}{' *' + suffix if suffix else ''}",
          f"found {len(found)}")
    return found[0] if found else {}


# ---------------------------------------------------------------------------------------------
# Non-default values: shared mode with everything on.

PG_PASSWORD = "pg-Secret-9f2c"
SASL_PASSWORD = "sasl-Secret-7d1e"
WEBHOOK_SECRET = "hook-Secret-3a8b"
# A token given to the chart as its hash only; tests/deploy.rs ingests with it.
ADAPTER_TOKEN = "sg_" + "5e" * 32
TOKEN_HASHES = [hashlib.sha256(ADAPTER_TOKEN.encode()).hexdigest(), "0123456789abcdef" * 4]

PRODUCTION = {
    "replicaCount": 3,
    "image": {"repository": "registry.example.gov.cn/shenguan/shenguan", "tag": "0.1.0",
              "pullPolicy": "IfNotPresent"},
    "ledger": {"type": "postgres",
               "url": f"postgres://shenguan:{PG_PASSWORD}@pg.db.svc:5432/shenguan",
               "burst": 8000},
    "auth": {"tokens": [
        {"role": "adapter", "subject": "nx-zwfw-approval", "sha256": TOKEN_HASHES[0]},
        {"role": "admin", "sha256": TOKEN_HASHES[1]},
    ]},
    "secretEnv": {"SHENGUAN_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                  "SZS_SCJG_WEBHOOK_SECRET": WEBHOOK_SECRET},
    "extraEnv": [{"name": "RUST_LOG", "value": "shenguan=debug,info"}],
    "config": {
        "policy": "jining-2022",
        "bus": {"url": "kafka://kafka-0.kafka.svc:9092,kafka-1.kafka.svc:9092",
                "kafka": {"replication_factor": 3, "partitions": 12,
                          "properties": {"security.protocol": "SASL_SSL",
                                         "sasl.mechanism": "SCRAM-SHA-512",
                                         "sasl.username": "shenguan"}}},
        "server": {"shutdown_grace_seconds": 40},
        "log": {"format": "json", "level": "info"},
    },
    "terminationGracePeriodSeconds": 60,
    # Test data in the calendar format (only 元旦), not the State Council's 2027 arrangement.
    "calendar": {"files": {"2027.toml": "year = 2027\nnotice = \"test data\"\n"
                                        "off = [{ date = 2027-01-01, holiday = \"元旦\" }]\nwork = []\n"}},
    "adapters": {"shipped": True, "files": {"site-oa/notice.yaml": "# placeholder replaced in the test\n"}},
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "shenguan"}}}],
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "审管联动"}},
    },
}
# The extra adapter must be a real one for the gateway to start: reuse the shipped adapter under a
# second system directory (tests/deploy.rs boots the gateway on the materialised tree).
SHIPPED_ADAPTER = (REPO / "adapters" / "nx-zwfw" / "approval.yaml")


def production_values() -> dict:
    """PRODUCTION with a site adapter (a copy of the shipped one under another system and name)."""
    values = json.loads(json.dumps(PRODUCTION))
    values["adapters"]["files"] = {"site-oa/approval.yaml": SHIPPED_ADAPTER.read_text(encoding="utf-8")
                                   .replace("adapter: nx-zwfw-approval", "adapter: site-oa-approval")}
    for name in ("applicant-category.yaml", "card-type.yaml", "license-category.yaml"):
        values["adapters"]["files"][f"site-oa/tables/{name}"] = (
            REPO / "adapters" / "nx-zwfw" / "tables" / name).read_text(encoding="utf-8")
    return values


# An Ingress terminating TLS for two host names with ingress-nginx and cert-manager.
INGRESS = {"ingress": {
    "enabled": True,
    "className": "nginx",
    "annotations": {"cert-manager.io/cluster-issuer": "gov-ca",
                    "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
                    "nginx.ingress.kubernetes.io/proxy-read-timeout": "60"},
    "hosts": [{"host": "shenguan.szs.gov.cn", "paths": [{"path": "/", "pathType": "Prefix"}]},
              {"host": "sgld.szs.gov.cn", "paths": [{"path": "/v1", "pathType": "Prefix"}]}],
    "tls": [{"secretName": "shenguan-tls", "hosts": ["shenguan.szs.gov.cn", "sgld.szs.gov.cn"]}],
    "allowPlainHttp": False,
}}

# The roles split: ledger pods (3, as PRODUCTION) and autoscaled ingest pods, with the Ingress.
SPLIT = json.loads(json.dumps(PRODUCTION))
SPLIT["split"] = {"enabled": True, "ingest": {
    "replicaCount": 2,
    "resources": {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 10,
                    "targetCPUUtilizationPercentage": 60}}}
SPLIT.update(INGRESS)

AUTOSCALED = json.loads(json.dumps(PRODUCTION))
AUTOSCALED["autoscaling"] = {"enabled": True, "minReplicas": 3, "maxReplicas": 9,
                             "targetCPUUtilizationPercentage": 70}


# ---------------------------------------------------------------------------------------------
# Checks on rendered objects


def container(pod_spec: dict, name: str, init: bool = False) -> dict:
    key = "initContainers" if init else "containers"
    for c in pod_spec.get(key, []):
        if c["name"] == name:
            return c
    return {}


def check_security(what: str, pod_spec: dict) -> None:
    psc = pod_spec.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{what}: pod runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{what}: pod seccompProfile RuntimeDefault")
    for c in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        sc = c.get("securityContext", {})
        n = f"{what}: container {c['name']}"
        check(sc.get("runAsNonRoot") is True, f"{n} runAsNonRoot")
        check(sc.get("runAsUser") == 10001, f"{n} runs as uid 10001 (the image's user)")
        check(sc.get("readOnlyRootFilesystem") is True, f"{n} readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{n} allowPrivilegeEscalation false")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{n} drops ALL capabilities")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"{n} seccompProfile RuntimeDefault")
        check(bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")),
              f"{n} has resource requests and limits")


def check_deployment(what: str, manifests: list[dict], values: dict) -> dict:
    dep = one(manifests, "Deployment", what)
    if not dep:
        return {}
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in selector.items()), f"{what}: selector matches the pod labels")
    main = container(pod, "shenguan")
    check(bool(main), f"{what}: container shenguan")
    check(main.get("command") == ["/usr/local/bin/shenguan"] and main.get("args") == ["run"],
          f"{what}: runs `shenguan run`", f"{main.get('command')} {main.get('args')}")
    ports = {p["name"]: p for p in main.get("ports", [])}
    check(ports.get("http", {}).get("containerPort") == 8080, f"{what}: container port http 8080")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        got = main.get(probe, {}).get("httpGet", {})
        check(got.get("path") == path and got.get("port") == "http",
              f"{what}: {probe} GET {path} on port http", json.dumps(got))
    check_security(what, pod)
    check(pod.get("automountServiceAccountToken") is False, f"{what}: no service account token mounted")
    check(pod.get("enableServiceLinks") is False, f"{what}: enableServiceLinks false (no SHENGUAN_* from Services)")
    grace = values.get("config", {}).get("server", {}).get("shutdown_grace_seconds", 30)
    pre = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[-1]) if pre else 0
    check(pod.get("terminationGracePeriodSeconds", 30) > grace + pre_s,
          f"{what}: terminationGracePeriodSeconds ({pod.get('terminationGracePeriodSeconds')}) > "
          f"preStop ({pre_s}) + shutdown grace ({grace})")
    annotations = spec["template"]["metadata"].get("annotations", {})
    for part in ("config", "adapters", "catalog", "calendar", "policies"):
        check(re.fullmatch(r"[0-9a-f]{64}", annotations.get(f"checksum/{part}", "")) is not None,
              f"{what}: checksum/{part} annotation rolls the pods on change")
    # Every mount names a volume; the gateway's paths are mounted where shenguan.toml says.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes, f"{what}: {c['name']} mount {m['mountPath']} has volume {m['name']}")
    mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
    for path, vol in (("/etc/shenguan/adapters", "adapters"), ("/etc/shenguan/catalog", "catalog"),
                      ("/etc/shenguan/calendar", "calendar"), ("/etc/shenguan/policies", "policies"),
                      ("/var/lib/shenguan", "data"), ("/tmp", "tmp"), ("/run/shenguan", "config")):
        check(mounts.get(path) == vol, f"{what}: {path} mounted from volume {vol}")
    env = {e["name"]: e for e in main.get("env", [])}
    check(env.get("SHENGUAN_CONFIG", {}).get("value") == "/run/shenguan/shenguan.toml",
          f"{what}: SHENGUAN_CONFIG is the assembled configuration")
    for name, e in env.items():
        check("value" not in e or not re.search(r"password|secret", name, re.I),
              f"{what}: env {name} is not a literal secret")
    return dep


def config_text(manifests: list[dict], what: str) -> str:
    cm = one(manifests, "ConfigMap", what, "-config")
    return cm.get("data", {}).get("shenguan.toml", "")


def secret_data(manifests: list[dict]) -> dict:
    secrets = by_kind(manifests, "Secret")
    if not secrets:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in secrets[0].get("data", {}).items()}


def materialise(manifests: list[dict], out: Path, what: str) -> None:
    """The pod's /etc/shenguan as the Deployment mounts it: config + tokens (as the init container
    assembles them), adapters by item path, catalog, calendar, policies."""
    dep = by_kind(manifests, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    cms = {m["metadata"]["name"]: m for m in by_kind(manifests, "ConfigMap")}
    etc = out / "etc"
    for v in pod["volumes"]:
        if "configMap" not in v or v["name"] == "config-base":
            continue
        cm = cms[v["configMap"]["name"]]
        data = cm.get("data") or {}
        items = v["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            target = etc / v["name"] / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]], encoding="utf-8")
    tokens = secret_data(manifests).get("tokens.toml", "")
    text = config_text(manifests, what)
    if tokens:
        text += "\n" + tokens
    (out / "shenguan.toml").write_text(text, encoding="utf-8")
    print(f"      wrote {out}")


def materialise_all(out: Path) -> None:
    section(f"materialise the pod's files under {out}")
    for values, name in ((None, "default"), (production_values(), "production")):
        manifests = render(values, name) or []
        if by_kind(manifests, "Deployment"):
            materialise(manifests, out / name, name)
    (out / "production" / "adapter-token").write_text(ADAPTER_TOKEN, encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def check_copies() -> None:
    section("one source: the chart's copies of repository files")
    pairs = [
        ("monitoring/prometheus/rules.yml", "files/prometheus/rules.yml"),
        ("monitoring/grafana/dashboards/shenguan.json", "files/grafana/shenguan.json"),
        ("catalog/routing.yaml", "files/catalog/routing.yaml"),
    ]
    source_adapters = sorted(
        p.relative_to(REPO / "adapters").as_posix()
        for p in (REPO / "adapters").rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".yml") and "fixtures" not in p.relative_to(REPO / "adapters").parts
    )
    chart_adapters = sorted(
        p.relative_to(CHART / "files" / "adapters").as_posix()
        for p in (CHART / "files" / "adapters").rglob("*") if p.is_file()
    )
    check(source_adapters == chart_adapters, "charts/shenguan/files/adapters/ has exactly the adapter YAML files of adapters/",
          f"repository {source_adapters}, chart {chart_adapters}")
    pairs += [(f"adapters/{p}", f"files/adapters/{p}") for p in source_adapters if p in chart_adapters]
    for source, copy in pairs:
        s, c = REPO / source, CHART / copy
        if not s.is_file():
            check(False, f"{source} exists (the chart ships a copy of it)")
            continue
        check(c.is_file() and c.read_bytes() == s.read_bytes(),
              f"charts/shenguan/{copy} is byte for byte {source}",
              "run: bash deploy/sync-chart-files.sh")


def documented_values() -> None:
    """Every key of values.yaml has a comment: its own (`# --` above it) or, for Kubernetes objects
    passed through, one on the object above it."""
    section("values.yaml is documented line by line")
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented)
    undocumented = []
    comment_above = False
    in_list_item_indent = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            comment_above = False
            continue
        if stripped.startswith("#"):
            comment_above = True
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- "):
            comment_above = False
            continue
        m = re.match(r"([A-Za-z0-9_.\"-]+):", stripped)
        if not m:
            comment_above = False
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(doc for _, doc in stack)
        documented = comment_above or inherited
        if not documented:
            undocumented.append(f"line {number}: {stripped}")
        stack.append((indent, comment_above or inherited))
        comment_above = False
    check(not undocumented, "every key in values.yaml has a comment", "; ".join(undocumented))


def check_schema() -> None:
    section("values.schema.json")
    schema_path = CHART / "values.schema.json"
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        check(False, "values.schema.json is JSON", str(exc))
        return
    check(schema.get("additionalProperties") is False, "values.schema.json rejects unknown top-level keys")
    with helm.Chart.load(CHART) as chart:
        for values, what in ((None, "default values"), (PRODUCTION, "non-default values"),
                             (AUTOSCALED, "autoscaled values"), (SPLIT, "split values")):
            try:
                chart.validate_schema(values)
                check(True, f"{what} validate against values.schema.json")
            except helm.HelmError as exc:
                check(False, f"{what} validate against values.schema.json", str(exc))
        defaults = chart.values

    # Every object in values.yaml that the chart owns is closed (additionalProperties false).
    def closed(node_schema: dict, node_values, path: str) -> None:
        if not isinstance(node_values, dict) or node_schema.get("type") != "object":
            return
        props = node_schema.get("properties")
        if props is None or "passed through" in node_schema.get("description", ""):
            return  # a Kubernetes object (resources, securityContext …): its own API checks it
        check(node_schema.get("additionalProperties") is False,
              f"schema of {path or 'values'} rejects unknown keys")
        for k, v in node_values.items():
            check(k in props, f"schema describes {path + '.' if path else ''}{k}")
            if k in props:
                closed(props[k], v, f"{path + '.' if path else ''}{k}")

    closed(schema, defaults, "")
    bad = [
        ({"replicaCont": 2}, "additional propert", "a misspelt top-level key"),
        ({"config": {"server": {"listne": "0.0.0.0:1"}}}, "additional propert", "a misspelt config key"),
        ({"config": {"log": {"format": "xml"}}}, "format", "an unknown log format"),
        ({"config": {"bus": {"url": "amqp://mq:5672"}}}, "url", "a bus URL that is neither embedded nor kafka://"),
        ({"ledger": {"type": "mysql"}}, "type", "an unknown ledger type"),
        ({"ledger": {"type": "postgres", "url": "mysql://x"}}, "url", "a ledger URL that is not postgres://"),
        ({"securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": False,
                              "allowPrivilegeEscalation": False}}, "readOnlyRootFilesystem",
         "a writable root file system"),
        ({"auth": {"tokens": [{"role": "adapter", "subject": "x", "sha256": "not-a-hash"}]}}, "sha256",
         "a token hash that is not 64 hex digits"),
        ({"config": {"bus": {"kafka": {"properties": {"sasl.password": "x"}}}}}, "sasl.password",
         "a password in the Kafka properties (it belongs in secretEnv)"),
    ]
    for values, expect, what in bad:
        render_fails(values, expect, f"values.schema.json refuses {what}")


def check_chart() -> None:
    section("helm lint")
    for values, what in ((None, "default values"), (PRODUCTION, "non-default values"),
                         (SPLIT, "split values")):
        report = helm.lint(CHART, values, strict=True)
        serious = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        check(not report.get("errors") and not serious, f"helm lint --strict passes with {what}",
              json.dumps(report, ensure_ascii=False))

    meta = load_yaml((CHART / "Chart.yaml").read_text(encoding="utf-8"), "Chart.yaml") or {}
    check(meta.get("apiVersion") == "v2", "Chart.yaml apiVersion v2")

    # ------------------------------------------------------------------ default values
    section("render: default values (single instance: embedded bus, SQLite ledger)")
    default = render(None, "default") or []
    kinds = sorted(m["kind"] for m in default)
    check(kinds == sorted(["ConfigMap"] * 5 + ["Deployment", "Service", "ServiceAccount",
                                               "PersistentVolumeClaim", "PodDisruptionBudget"]),
          "default: ConfigMaps, Deployment, Service, ServiceAccount, PVC, PDB and nothing else", str(kinds))
    dep = check_deployment("default", default, {})
    if dep:
        spec = dep["spec"]
        check(spec.get("replicas") == 1, "default: one replica")
        check(spec.get("strategy", {}).get("type") == "Recreate",
              "default: Recreate (the old pod releases the volume first)")
        vols = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        check("persistentVolumeClaim" in vols.get("data", {}), "default: data on the PersistentVolumeClaim")
        env = [e["name"] for e in spec["template"]["spec"]["containers"][0].get("env", [])]
        check("SHENGUAN_LEDGER" not in env, "default: no SHENGUAN_LEDGER (SQLite on the volume)")
    pvc = one(default, "PersistentVolumeClaim", "default")
    check(pvc.get("metadata", {}).get("annotations", {}).get("helm.sh/resource-policy") == "keep",
          "default: the PVC survives helm uninstall")
    text = config_text(default, "default")
    check('url = "embedded"' in text and 'url = "sqlite:/var/lib/shenguan/ledger.db"' in text,
          "default: shenguan.toml has the embedded bus and the SQLite ledger on the volume")
    check('listen = "0.0.0.0:8080"' in text, "default: listens on 0.0.0.0:8080 in the pod")
    check_service_and_pdb("default", default)
    adapters_cm = one(default, "ConfigMap", "default", "-adapters")
    for key, content in (adapters_cm.get("data") or {}).items():
        source = REPO / "adapters" / key.replace("__", "/")
        check(source.is_file() and source.read_text(encoding="utf-8") == content,
              f"default: adapter {key} is adapters/{key.replace('__', '/')}")
    catalog_cm = one(default, "ConfigMap", "default", "-catalog")
    check(catalog_cm.get("data", {}).get("routing.yaml") == (REPO / "catalog" / "routing.yaml").read_text(encoding="utf-8"),
          "default: the catalog ConfigMap is catalog/routing.yaml")

    # ------------------------------------------------------------------ non-default values
    section("render: non-default values (Kafka, PostgreSQL, 3 replicas, monitoring, tokens, extra env)")
    production = production_values()
    prod = render(production, "non-default") or []
    kinds = sorted(m["kind"] for m in prod)
    for kind in ("Deployment", "Service", "Secret", "ServiceMonitor", "PrometheusRule",
                 "PodDisruptionBudget"):
        check(kind in kinds, f"non-default: renders a {kind}", str(kinds))
    check("PersistentVolumeClaim" not in kinds, "non-default: no PVC (pods keep no state)")
    check("HorizontalPodAutoscaler" not in kinds, "non-default: no HPA unless enabled")
    dep = check_deployment("non-default", prod, production)
    if dep:
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        main = container(pod, "shenguan")
        check(spec.get("replicas") == 3, "non-default: 3 replicas")
        check(spec.get("strategy", {}).get("type") == "RollingUpdate"
              and spec["strategy"]["rollingUpdate"].get("maxUnavailable") == 0,
              "non-default: RollingUpdate without losing capacity")
        vols = {v["name"]: v for v in pod["volumes"]}
        check("emptyDir" in vols.get("data", {}), "non-default: data dir is an emptyDir")
        check(main.get("image") == "registry.example.gov.cn/shenguan/shenguan:0.1.0", "non-default: image from values")
        env = {e["name"]: e for e in main.get("env", [])}
        ref = env.get("SHENGUAN_LEDGER", {}).get("valueFrom", {}).get("secretKeyRef", {})
        check(ref.get("name") == "sg-shenguan-secret" and ref.get("key") == "ledger-url",
              "non-default: SHENGUAN_LEDGER from the Secret")
        for name in ("SHENGUAN_KAFKA_SASL_PASSWORD", "SZS_SCJG_WEBHOOK_SECRET"):
            ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
            check(ref.get("key") == name, f"non-default: {name} from the Secret")
        check(env.get("RUST_LOG", {}).get("value") == "shenguan=debug,info", "non-default: extra env")
        annotations = spec["template"]["metadata"]["annotations"]
        check("checksum/secret" in annotations, "non-default: checksum/secret rolls the pods on change")
        init = container(pod, "config", init=True)
        mounts = {m["name"] for m in init.get("volumeMounts", [])}
        check({"config-base", "tokens", "config"} <= mounts,
              "non-default: the init container assembles config + tokens", str(mounts))
        check(vols.get("tokens", {}).get("secret", {}).get("secretName") == "sg-shenguan-secret",
              "non-default: tokens from the Secret")
        items = {i["path"] for i in vols.get("adapters", {}).get("configMap", {}).get("items", [])}
        check({"nx-zwfw/approval.yaml", "site-oa/approval.yaml", "site-oa/tables/card-type.yaml"} <= items,
              "non-default: shipped and site adapters mounted at their paths", str(sorted(items)))
        check(bool(pod.get("topologySpreadConstraints")), "non-default: topology spread constraints")
    secret = secret_data(prod)
    check(secret.get("ledger-url") == PRODUCTION["ledger"]["url"], "non-default: the Secret holds the ledger URL")
    check(secret.get("SHENGUAN_KAFKA_SASL_PASSWORD") == SASL_PASSWORD, "non-default: the Secret holds the Kafka password")
    toks = secret.get("tokens.toml", "")
    check(len(re.findall(r"^\[\[auth\.tokens\]\]$", toks, re.M)) == 2 and all(h in toks for h in TOKEN_HASHES),
          "non-default: the Secret holds the token hashes as [[auth.tokens]]")
    for m in prod:
        if m["kind"] == "Secret":
            continue
        dumped = json.dumps(m, ensure_ascii=False)
        leaked = [s for s in (PG_PASSWORD, SASL_PASSWORD, WEBHOOK_SECRET) + tuple(TOKEN_HASHES) if s in dumped]
        check(not leaked, f"non-default: no secret in {m['kind']} {m['metadata']['name']}", str(leaked))
    text = config_text(prod, "non-default")
    check('url = "kafka://kafka-0.kafka.svc:9092,kafka-1.kafka.svc:9092"' in text,
          "non-default: shenguan.toml has the Kafka bus")
    check('"security.protocol" = "SASL_SSL"' in text, "non-default: Kafka properties in shenguan.toml")
    check("sqlite" not in text and "postgres" not in text,
          "non-default: no ledger URL in shenguan.toml (it comes from the Secret)")
    check('policy = "jining-2022"' in text and "shutdown_grace_seconds = 40" in text,
          "non-default: config values reach shenguan.toml")
    check_service_and_pdb("non-default", prod)
    pdb = one(prod, "PodDisruptionBudget", "non-default")
    check(pdb.get("spec", {}).get("minAvailable") == 2, "non-default: PDB minAvailable 2")

    sm = one(prod, "ServiceMonitor", "non-default")
    if sm:
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor is monitoring.coreos.com/v1")
        ep = sm["spec"]["endpoints"][0]
        check(ep.get("port") == "http" and ep.get("path") == "/metrics", "ServiceMonitor scrapes http /metrics")
        check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "ServiceMonitor carries the selector labels")
        svc = one(prod, "Service", "non-default")
        check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
              "ServiceMonitor selects the Service")
    pr = one(prod, "PrometheusRule", "non-default")
    rules_file = REPO / "monitoring" / "prometheus" / "rules.yml"
    if pr and rules_file.is_file():
        source = load_yaml(rules_file.read_text(encoding="utf-8"), "monitoring/prometheus/rules.yml") or {}
        check(pr["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule is monitoring.coreos.com/v1")
        check(bool(source.get("groups")) and pr["spec"].get("groups") == source.get("groups"),
              "PrometheusRule has the same groups as monitoring/prometheus/rules.yml",
              "differs: run bash deploy/sync-chart-files.sh")
        alerts = [r["alert"] for g in pr["spec"].get("groups", []) for r in g.get("rules", []) if "alert" in r]
        print(f"      {len(alerts)} alerts, {sum(len(g.get('rules', [])) - 0 for g in pr['spec'].get('groups', []))} rules")
    else:
        check(rules_file.is_file(), "monitoring/prometheus/rules.yml exists")
    dash = one(prod, "ConfigMap", "non-default", "-dashboard")
    dash_file = REPO / "monitoring" / "grafana" / "dashboards" / "shenguan.json"
    if dash:
        check(dash["metadata"]["labels"].get("grafana_dashboard") == "1", 'dashboard ConfigMap has label grafana_dashboard: "1"')
        check(dash["metadata"].get("annotations", {}).get("grafana_folder") == "审管联动", "dashboard ConfigMap annotations")
        content = dash.get("data", {}).get("shenguan.json", "")
        if dash_file.is_file():
            check(content == dash_file.read_text(encoding="utf-8"),
                  "dashboard ConfigMap holds monitoring/grafana/dashboards/shenguan.json",
                  "differs: run bash deploy/sync-chart-files.sh")
            try:
                board = json.loads(content)
                check(isinstance(board, dict) and bool(board.get("panels")), "the dashboard is JSON with panels")
            except ValueError as exc:
                check(False, "the dashboard is JSON", str(exc))
        else:
            check(False, "monitoring/grafana/dashboards/shenguan.json exists")
    cal = one(prod, "ConfigMap", "non-default", "-calendar")
    check("2027.toml" in (cal.get("data") or {}), "non-default: calendar year from values")

    # ------------------------------------------------------------------ autoscaled
    section("render: HorizontalPodAutoscaler")
    auto = render(AUTOSCALED, "autoscaled") or []
    hpa = one(auto, "HorizontalPodAutoscaler", "autoscaled")
    if hpa:
        check(hpa["apiVersion"] == "autoscaling/v2", "HPA is autoscaling/v2")
        check(hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sg-shenguan"},
              "HPA scales the Deployment")
        check(hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 9, "HPA min/max from values")
    dep = one(auto, "Deployment", "autoscaled")
    check("replicas" not in dep.get("spec", {}), "autoscaled: the Deployment leaves replicas to the HPA")

    # ------------------------------------------------------------------ ingress
    check_ingress()

    # ------------------------------------------------------------------ roles
    check_split()

    # ------------------------------------------------------------------ refused
    section("render refuses what cannot work")
    render_fails({"replicaCount": 3}, "replicaCount 3.*kafka.*postgres",
                 "replicas > 1 with the embedded bus and the SQLite ledger")
    render_fails({"replicaCount": 2, "config": {"bus": {"url": "kafka://k:9092"}}}, "ledger",
                 "replicas > 1 with Kafka but the SQLite ledger")
    render_fails({"replicaCount": 2, "ledger": {"type": "postgres", "url": "postgres://u:p@h/db"}}, "kafka",
                 "replicas > 1 with PostgreSQL but the embedded bus")
    render_fails({"autoscaling": {"enabled": True}}, "autoscaling",
                 "autoscaling with the embedded bus and the SQLite ledger")
    render_fails({"ledger": {"type": "postgres"}}, "ledger.url", "a PostgreSQL ledger without a URL")
    render_fails({"ledger": {"burst": 0}}, "burst", "a ledger burst of 0 messages")
    render_fails({"ledger": {"url": "postgres://u:p@h/db"}}, "ledger.type postgres",
                 "a ledger URL with ledger.type sqlite")
    render_fails({"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds",
                 "a termination grace period shorter than preStop + shutdown grace")
    render_fails({"secretEnv": {"SHENGUAN_LEDGER": "postgres://u:p@h/db"}}, "ledger",
                 "the ledger URL smuggled in through secretEnv")
    render_fails({"split": {"enabled": True}}, "split.enabled.*kafka.*postgres",
                 "split roles with the embedded bus and the SQLite ledger")
    render_fails({"split": {"enabled": True}, "config": {"bus": {"url": "kafka://k:9092"}}},
                 "split.enabled.*postgres", "split roles with Kafka but the SQLite ledger")
    bad_hpa = json.loads(json.dumps(SPLIT))
    bad_hpa["split"]["ingest"]["autoscaling"]["minReplicas"] = 20
    render_fails(bad_hpa, "split.ingest.autoscaling.minReplicas", "ingest autoscaling with min > max")


def check_ingress() -> None:
    section("render: Ingress with TLS")
    check(not by_kind(render(None, "default") or [], "Ingress"), "default: no Ingress")
    manifests = render(INGRESS, "ingress") or []
    ingress = one(manifests, "Ingress", "ingress")
    svc = one(manifests, "Service", "ingress")
    if not ingress or not svc:
        return
    spec = ingress["spec"]
    check(ingress["apiVersion"] == "networking.k8s.io/v1", "Ingress is networking.k8s.io/v1")
    check(spec.get("ingressClassName") == "nginx", "Ingress class from values")
    check(ingress["metadata"].get("annotations", {}).get("cert-manager.io/cluster-issuer") == "gov-ca"
          and ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/proxy-body-size") == "16m",
          "Ingress annotations from values")
    tls_hosts = {h for t in spec.get("tls", []) for h in t.get("hosts", [])}
    rule_hosts = [r.get("host") for r in spec.get("rules", [])]
    check(rule_hosts == ["shenguan.szs.gov.cn", "sgld.szs.gov.cn"], "Ingress rules for every host", str(rule_hosts))
    check(set(rule_hosts) <= tls_hosts, "every Ingress host is served over TLS", f"{rule_hosts} vs {tls_hosts}")
    check([t.get("secretName") for t in spec.get("tls", [])] == ["shenguan-tls"], "TLS Secret from values")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    backends = [p["backend"]["service"] for r in spec.get("rules", []) for p in r["http"]["paths"]]
    check(bool(backends) and all(b["name"] == svc["metadata"]["name"] and b["port"].get("name") in svc_ports
                                 for b in backends),
          "every Ingress path goes to the Service's http port", str(backends))
    paths = [(p["path"], p["pathType"]) for r in spec["rules"] for p in r["http"]["paths"]]
    check(paths == [("/", "Prefix"), ("/v1", "Prefix")], "Ingress paths from values", str(paths))
    notes = render_notes(INGRESS)
    check("https://shenguan.szs.gov.cn" in notes, "NOTES.txt names the HTTPS address", notes)
    with helm.Chart.load(CHART) as chart:
        try:
            chart.validate_schema(INGRESS)
            check(True, "Ingress values validate against values.schema.json")
        except helm.HelmError as exc:
            check(False, "Ingress values validate against values.schema.json", str(exc))
    report = helm.lint(CHART, INGRESS, strict=True)
    serious = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    check(not report.get("errors") and not serious, "helm lint --strict passes with the Ingress",
          json.dumps(report, ensure_ascii=False))
    # TLS may end before the cluster, when the operator says so.
    plain = json.loads(json.dumps(INGRESS))
    plain["ingress"]["tls"] = []
    plain["ingress"]["allowPlainHttp"] = True
    lone = one(render(plain, "ingress without TLS, allowed") or [], "Ingress", "ingress without TLS, allowed")
    check(bool(lone) and "tls" not in lone.get("spec", {}), "allowPlainHttp: an Ingress without TLS renders")

    section("render refuses an Ingress that would carry tokens in clear")
    no_tls = json.loads(json.dumps(INGRESS))
    no_tls["ingress"]["tls"] = []
    render_fails(no_tls, "shenguan.szs.gov.cn has no TLS", "an Ingress without TLS")
    partial = json.loads(json.dumps(INGRESS))
    partial["ingress"]["tls"][0]["hosts"] = ["shenguan.szs.gov.cn"]
    render_fails(partial, "sgld.szs.gov.cn has no TLS", "an Ingress host not covered by its TLS")
    for values, expect, what in (
        ({"ingress": {"enabled": True, "hosts": [{"host": "x.gov.cn", "paths": [{"path": "v1", "pathType": "Prefix"}]}]}},
         "path", "an Ingress path that does not start with /"),
        ({"ingress": {"enabled": True, "hosts": [{"host": "x.gov.cn", "paths": [{"path": "/", "pathType": "Regex"}]}]}},
         "pathType", "an unknown Ingress pathType"),
        ({"ingress": {"enabled": True, "hosts": [{"host": "https://x.gov.cn", "paths": [{"path": "/", "pathType": "Prefix"}]}]}},
         "host", "an Ingress host that is a URL"),
        ({"ingress": {"enabled": True, "tls": [{"secretName": "", "hosts": ["x.gov.cn"]}]}},
         "secretName", "a TLS entry without a Secret"),
        ({"ingress": {"enabeld": True}}, "additional propert", "a misspelt Ingress key"),
    ):
        render_fails(values, expect, f"values.schema.json refuses {what}")


def check_split() -> None:
    """split.enabled: a ledger and an ingest Deployment, each with its Service, PDB and HPA, each
    running its role, and the Ingress sending /v1/ingest to the ingest pods."""
    section("render: roles split (ingest and ledger Deployments)")
    manifests = render(SPLIT, "split") or []
    deps = {d["metadata"]["name"]: d for d in by_kind(manifests, "Deployment")}
    check(sorted(deps) == ["sg-shenguan-ingest", "sg-shenguan-ledger"],
          "split: the Deployments sg-shenguan-ledger and sg-shenguan-ingest", str(sorted(deps)))
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "Service")}
    check(sorted(services) == ["sg-shenguan", "sg-shenguan-ingest"],
          "split: the Services sg-shenguan (ledger) and sg-shenguan-ingest", str(sorted(services)))
    if len(deps) != 2 or len(services) != 2:
        return
    ledger, ingest = deps["sg-shenguan-ledger"], deps["sg-shenguan-ingest"]
    for role, dep in (("ledger", ledger), ("ingest", ingest)):
        what = f"split {role}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        main = container(pod, "shenguan")
        check(main.get("args") == ["run", "--role", role], f"{what}: runs `shenguan run --role {role}`",
              str(main.get("args")))
        labels = spec["template"]["metadata"]["labels"]
        check(labels.get("app.kubernetes.io/component") == role and
              spec["selector"]["matchLabels"].get("app.kubernetes.io/component") == role,
              f"{what}: pods labelled and selected as component {role}")
        check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
              f"{what}: selector matches the pod labels")
        env = {e["name"]: e for e in main.get("env", [])}
        check("secretKeyRef" in env.get("SHENGUAN_LEDGER", {}).get("valueFrom", {}),
              f"{what}: the PostgreSQL URL (state, tokens{'' if role == 'ingest' else ', ledger'}) from the Secret")
        check(spec.get("strategy", {}).get("type") == "RollingUpdate", f"{what}: RollingUpdate")
        check_security(what, pod)
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            check(main.get(probe, {}).get("httpGet", {}).get("path") == path, f"{what}: {probe} {path}")
        other = ingest if role == "ledger" else ledger
        other_labels = other["spec"]["template"]["metadata"]["labels"]
        check(not all(other_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
              f"{what}: its selector does not take the other role's pods")
    check(ledger["spec"].get("replicas") == 3, "split ledger: replicaCount 3")
    check("replicas" not in ingest["spec"], "split ingest: replicas left to its HPA")
    main = container(ingest["spec"]["template"]["spec"], "shenguan")
    check(main.get("resources", {}).get("requests", {}).get("cpu") == "1",
          "split ingest: its own resources")
    for name, role in (("sg-shenguan", "ledger"), ("sg-shenguan-ingest", "ingest")):
        sel = services[name]["spec"]["selector"]
        check(sel.get("app.kubernetes.io/component") == role, f"split: Service {name} selects the {role} pods",
              str(sel))
    pdbs = {p["metadata"]["name"]: p for p in by_kind(manifests, "PodDisruptionBudget")}
    check(sorted(pdbs) == ["sg-shenguan-ingest", "sg-shenguan-ledger"], "split: a PDB per role", str(sorted(pdbs)))
    hpas = {h["metadata"]["name"]: h for h in by_kind(manifests, "HorizontalPodAutoscaler")}
    check(sorted(hpas) == ["sg-shenguan-ingest"], "split: an HPA for the ingest Deployment only "
          "(the ledger's autoscaling is off)", str(sorted(hpas)))
    if "sg-shenguan-ingest" in hpas:
        h = hpas["sg-shenguan-ingest"]["spec"]
        check(h["scaleTargetRef"]["name"] == "sg-shenguan-ingest" and h["minReplicas"] == 2
              and h["maxReplicas"] == 10, "split: the ingest HPA scales the ingest Deployment 2–10")
    auto = json.loads(json.dumps(SPLIT))
    auto["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4,
                           "targetCPUUtilizationPercentage": 70}
    both = {h["metadata"]["name"]: h["spec"]["scaleTargetRef"]["name"]
            for h in by_kind(render(auto, "split, both autoscaled") or [], "HorizontalPodAutoscaler")}
    check(both == {"sg-shenguan-ingest": "sg-shenguan-ingest", "sg-shenguan-ledger": "sg-shenguan-ledger"},
          "split: with autoscaling on, an HPA per role, each on its Deployment", str(both))
    ingress = one(manifests, "Ingress", "split")
    if ingress:
        for rule in ingress["spec"]["rules"]:
            paths = [(p["path"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]]
            check(paths[0] == ("/v1/ingest", "sg-shenguan-ingest") and
                  all(svc == "sg-shenguan" for _, svc in paths[1:]),
                  f"split: Ingress {rule['host']} sends /v1/ingest to the ingest pods, the rest to the ledger",
                  str(paths))
    sm = one(manifests, "ServiceMonitor", "split")
    if sm:
        wanted = sm["spec"]["selector"]["matchLabels"]
        check(all(all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items()) for s in services.values()),
              "split: the ServiceMonitor scrapes both roles' Services")
    notes = render_notes(SPLIT)
    check("--role ingest" in notes and "sg-shenguan-ingest" in notes, "split: NOTES.txt names the roles", notes)


def render_notes(values: dict) -> str:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="sg", namespace="gov")
    return next((text for name, text in out.items() if name.endswith("NOTES.txt")), "")


def check_service_and_pdb(what: str, manifests: list[dict]) -> None:
    dep = by_kind(manifests, "Deployment")
    svc = one(manifests, "Service", what)
    if not dep or not svc:
        return
    labels = dep[0]["spec"]["template"]["metadata"]["labels"]
    ports = svc["spec"]["ports"]
    check(any(p.get("name") == "http" and p.get("targetPort") == "http" for p in ports),
          f"{what}: Service port http → container port http")
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), f"{what}: Service selects the pods")
    for pdb in by_kind(manifests, "PodDisruptionBudget"):
        check(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()),
              f"{what}: PodDisruptionBudget selects the pods")


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def env_map(env) -> dict:
    if isinstance(env, list):
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount of a service."""
    binds = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            if parts[0].startswith((".", "/")):
                binds.append((parts[0], parts[1]))
        elif v.get("type") == "bind":
            binds.append((v["source"], v["target"]))
    return binds


def container_to_repo(binds: list[tuple[str, str]], path: str) -> Path | None:
    """The repository file a container path of a service shows, through its bind mounts."""
    for host, target in sorted(binds, key=lambda b: -len(b[1])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return (REPO / host / path[len(target):].lstrip("/")).resolve()
    return None


def check_compose() -> None:
    section("docker-compose.yml")
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    compose = load_yaml(text, "docker-compose.yml")
    if not compose:
        return
    services = compose.get("services", {})
    expected = {"kafka", "postgres", "shenguan", "shenguan-ingest", "gateway", "prometheus", "alertmanager",
                "grafana", "simulator"}
    check(expected <= set(services), "services: " + ", ".join(sorted(expected)), str(sorted(services)))
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        hc = svc.get("healthcheck", {})
        check(bool(hc.get("test")) and not hc.get("disable"), f"{name}: has a healthcheck")
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                ok = port.get("host_ip") == "127.0.0.1"
            else:
                ok = str(port).startswith("127.0.0.1:")
            check(ok, f"{name}: port {port} is bound to 127.0.0.1")
        for host, _ in bind_mounts(svc):
            check((REPO / host).exists(), f"{name}: mounted {host} exists in the repository")
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if isinstance(v, str) and not src.startswith((".", "/")):
                check(src in declared_volumes, f"{name}: named volume {src} is declared")
        check("privileged" not in svc, f"{name}: not privileged")

    kafka = services.get("kafka", {})
    check(str(kafka.get("image", "")).startswith("apache/kafka:"), "kafka: the official apache/kafka image",
          str(kafka.get("image")))
    env = env_map(kafka.get("environment"))
    node = env.get("KAFKA_NODE_ID", "")
    check(node.isdigit(), "kafka: KAFKA_NODE_ID")
    check(set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) == {"broker", "controller"},
          "kafka: KRaft combined mode (process roles broker,controller)")
    check(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").startswith(f"{node}@kafka:"),
          "kafka: controller quorum voters is this node")
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
    check(bool(controller) and f"{controller}://" in env.get("KAFKA_LISTENERS", ""),
          "kafka: a controller listener")
    check("://kafka:9092" in env.get("KAFKA_ADVERTISED_LISTENERS", ""),
          "kafka: advertises kafka:9092 on the compose network")
    check(f"{controller}:" in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ""),
          "kafka: listener security protocol map names the controller listener")
    check(env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1", "kafka: offsets topic replication factor 1")
    check("ZOOKEEPER" not in " ".join(env), "kafka: no ZooKeeper")

    pg = services.get("postgres", {})
    check(str(pg.get("image", "")).startswith("postgres:16"), "postgres: PostgreSQL 16")
    check(env_map(pg.get("environment")).get("POSTGRES_PASSWORD", "").startswith("${"),
          "postgres: the password comes from .env, not the file")

    sg = services.get("shenguan", {})
    build = sg.get("build", {})
    context = build if isinstance(build, str) else build.get("context")
    check(context in (".", "./"), "shenguan: built from the repository's Dockerfile")
    deps = sg.get("depends_on", {})
    for dep in ("kafka", "postgres"):
        check(isinstance(deps, dict) and deps.get(dep, {}).get("condition") == "service_healthy",
              f"shenguan: waits for {dep} to be healthy")
    sg_env = env_map(sg.get("environment"))
    check(re.match(r"postgres://shenguan:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432/shenguan$",
                   sg_env.get("SHENGUAN_LEDGER", "")) is not None,
          "shenguan: PostgreSQL ledger, password from .env", sg_env.get("SHENGUAN_LEDGER", ""))
    check(sg.get("read_only") is True and "ALL" in sg.get("cap_drop", []),
          "shenguan: read-only root file system, no capabilities")
    binds = bind_mounts(sg)
    config_path = container_to_repo(binds, sg_env.get("SHENGUAN_CONFIG", "/etc/shenguan/shenguan.toml"))
    check(config_path is not None and config_path.is_file(), "shenguan: its configuration file is mounted",
          str(config_path))
    if config_path and config_path.is_file():
        conf = config_path.read_text(encoding="utf-8")
        check('url = "kafka://kafka:9092"' in conf, "shenguan: the compose configuration uses kafka:9092")
        check('listen = "0.0.0.0:8080"' in conf, "shenguan: listens on 0.0.0.0:8080 in the container")
        grace = re.search(r"shutdown_grace_seconds\s*=\s*(\d+)", conf)
        grace_s = int(grace.group(1)) if grace else 30
        stop = re.fullmatch(r"(\d+)s", str(sg.get("stop_grace_period", "10s")))
        check(stop is not None and int(stop.group(1)) > grace_s,
              f"shenguan: stop_grace_period ({sg.get('stop_grace_period')}) > shutdown_grace_seconds ({grace_s})")
        for key, path in re.findall(r'^(\w+_(?:dir|file))\s*=\s*"([^"]+)"', conf, re.M):
            if key == "data_dir":
                continue
            repo_path = container_to_repo(binds, path)
            check(repo_path is not None and repo_path.exists(),
                  f"shenguan: {key} {path} is mounted from the repository", str(repo_path))

    sim = services.get("simulator", {})
    check("simulator" in sim.get("profiles", []), "simulator: in the `simulator` profile")
    check(sim.get("depends_on", {}).get("gateway", {}).get("condition") == "service_healthy",
          "simulator: waits for the gateway")
    sim_binds = bind_mounts(sim)
    entry = sim.get("entrypoint") or []
    script = container_to_repo(sim_binds, entry[-1]) if entry else None
    script_text = script.read_text(encoding="utf-8") if script and script.is_file() else ""
    check("shenguan demo --target" in script_text, "simulator: runs `shenguan demo --target` against the gateway",
          str(script))
    check(env_map(sim.get("environment")).get("SHENGUAN_DEMO_TARGET") == "http://gateway:8080",
          "simulator: targets http://gateway:8080 (both roles behind it)")
    check_compose_roles(services)

    check(str(services.get("prometheus", {}).get("image", "")).startswith("prom/prometheus:"), "prometheus: prom/prometheus")
    check(str(services.get("alertmanager", {}).get("image", "")).startswith("prom/alertmanager:"), "alertmanager: prom/alertmanager")
    check(str(services.get("grafana", {}).get("image", "")).startswith("grafana/grafana:"), "grafana: grafana/grafana")
    for name in ("prometheus", "alertmanager", "grafana"):
        for v in services.get(name, {}).get("volumes", []):
            if isinstance(v, str) and v.startswith("./"):
                check(v.endswith(":ro"), f"{name}: {v.split(':')[0]} mounted read-only")

    # Variables: every ${VAR} without a default is in deploy/.env.example.
    example = (REPO / "deploy" / ".env.example").read_text(encoding="utf-8")
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)(?::?\?[^}]*)?\}", text))):
        check(re.search(rf"^{var}=", example, re.M) is not None, f"${{{var}}} is in deploy/.env.example")
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+):-", text))):
        check(re.search(rf"^{var}=", example, re.M) is not None, f"${{{var}}} is documented in deploy/.env.example")

    check_monitoring_wiring(services)


def check_compose_roles(services: dict) -> None:
    """The two roles as two services on one broker and one PostgreSQL, and the gateway in front."""
    section("docker-compose.yml: roles")
    ledger, ingest, front = services.get("shenguan", {}), services.get("shenguan-ingest", {}), services.get("gateway", {})
    le, ie = env_map(ledger.get("environment")), env_map(ingest.get("environment"))
    check(le.get("SHENGUAN_ROLE") == "ledger", "shenguan: runs the ledger role")
    check(ie.get("SHENGUAN_ROLE") == "ingest", "shenguan-ingest: runs the ingest role")
    check(ie.get("SHENGUAN_LEDGER") == le.get("SHENGUAN_LEDGER"),
          "shenguan-ingest: the same PostgreSQL (tokens, de-duplication snapshot)")
    check(ie.get("SHENGUAN_CONFIG") == le.get("SHENGUAN_CONFIG")
          and bind_mounts(ingest) == [b for b in bind_mounts(ledger)],
          "shenguan-ingest: the same configuration and definitions (so the same Kafka bus)")
    check(not ingest.get("ports") and not ledger.get("ports"),
          "the roles publish no host port: the gateway is the one address (so ingest can be scaled)")
    check(ingest.get("read_only") is True and "ALL" in ingest.get("cap_drop", []),
          "shenguan-ingest: read-only root file system, no capabilities")
    deps = front.get("depends_on", {})
    check(all(deps.get(d, {}).get("condition") == "service_healthy" for d in ("shenguan", "shenguan-ingest")),
          "gateway: waits for both roles to be ready")
    check(front.get("read_only") is True and "ALL" in front.get("cap_drop", []),
          "gateway: read-only root file system, no capabilities")
    conf_path = container_to_repo(bind_mounts(front), "/etc/nginx/nginx.conf")
    check(conf_path is not None and conf_path.is_file(), "gateway: nginx.conf is mounted from the repository",
          str(conf_path))
    if conf_path and conf_path.is_file():
        conf = conf_path.read_text(encoding="utf-8")
        ingest_loc = re.search(r"location /v1/ingest/ \{(.*?)\}", conf, re.S)
        root_loc = re.search(r"location / \{(.*?)\}", conf, re.S)
        check(ingest_loc is not None and "http://shenguan-ingest:8080" in ingest_loc.group(1),
              "gateway: /v1/ingest/ goes to shenguan-ingest:8080")
        check(root_loc is not None and "http://shenguan:8080" in root_loc.group(1),
              "gateway: everything else goes to shenguan:8080 (the ledger)")
        check("resolver 127.0.0.11" in conf, "gateway: names resolved per request (scaled replicas are found)")
        check("client_max_body_size 16m" in conf, "gateway: takes bodies as large as the gateway does")


def check_monitoring_wiring(services: dict) -> None:
    """The monitoring files and the compose services agree on names, ports and paths."""
    section("docker-compose.yml ↔ monitoring/")
    prom = services.get("prometheus", {})
    prom_binds = bind_mounts(prom)
    conf_arg = next((a.split("=", 1)[1] for a in prom.get("command", []) if a.startswith("--config.file=")),
                    "/etc/prometheus/prometheus.yml")
    conf_path = container_to_repo(prom_binds, conf_arg)
    if not check(conf_path is not None and conf_path.is_file(), f"prometheus: {conf_arg} is mounted from the repository",
                 str(conf_path)):
        return
    conf = load_yaml(conf_path.read_text(encoding="utf-8"), str(conf_path)) or {}
    conf_dir = str(Path(conf_arg).parent)
    for pattern in conf.get("rule_files", []):
        full = pattern if pattern.startswith("/") else f"{conf_dir}/{pattern}"
        repo_path = container_to_repo(prom_binds, full)
        found = sorted(repo_path.parent.glob(repo_path.name)) if repo_path else []
        check(bool(found), f"prometheus: rule_files {pattern} resolves to repository files", str(repo_path))
    targets = [t for sc in conf.get("scrape_configs", []) for s in sc.get("static_configs", [])
               for t in s.get("targets", [])]
    check("shenguan:8080" in targets, "prometheus scrapes shenguan:8080", str(targets))
    dns = [n for sc in conf.get("scrape_configs", []) for d in sc.get("dns_sd_configs", [])
           for n in d.get("names", [])]
    check("shenguan-ingest" in dns, "prometheus scrapes every shenguan-ingest replica (DNS)", str(dns))
    am_targets = [t for am in conf.get("alerting", {}).get("alertmanagers", [])
                  for s in am.get("static_configs", []) for t in s.get("targets", [])]
    check("alertmanager:9093" in am_targets, "prometheus sends alerts to alertmanager:9093", str(am_targets))

    am = services.get("alertmanager", {})
    am_arg = next((a.split("=", 1)[1] for a in am.get("command", []) if a.startswith("--config.file=")),
                  "/etc/alertmanager/alertmanager.yml")
    am_path = container_to_repo(bind_mounts(am), am_arg)
    check(am_path is not None and am_path.is_file(), f"alertmanager: {am_arg} is mounted from the repository",
          str(am_path))
    if am_path and am_path.is_file():
        am_text = am_path.read_text(encoding="utf-8")
        am_conf = load_yaml(am_text, str(am_path)) or {}
        for pattern in am_conf.get("templates", []):
            full = pattern if pattern.startswith("/") else f"{Path(am_arg).parent}/{pattern}"
            repo_path = container_to_repo(bind_mounts(am), full)
            found = sorted(repo_path.parent.glob(repo_path.name)) if repo_path else []
            check(bool(found), f"alertmanager: templates {pattern} resolves to repository files", str(repo_path))
        for ref in re.findall(r"_file:\s*['\"]?(/[^\s'\"]+)", am_text):
            check(container_to_repo(bind_mounts(am), ref) is not None,
                  f"alertmanager: {ref} (a *_file reference) is mounted", "mount it or document it")

    graf = services.get("grafana", {})
    graf_binds = bind_mounts(graf)
    ds_dir = container_to_repo(graf_binds, "/etc/grafana/provisioning/datasources")
    db_dir = container_to_repo(graf_binds, "/etc/grafana/provisioning/dashboards")
    for d, what in ((ds_dir, "datasources"), (db_dir, "dashboards")):
        check(d is not None and d.is_dir() and any(d.glob("*.y*ml")),
              f"grafana: provisioning/{what} is mounted with a provisioning file", str(d))
    if ds_dir and ds_dir.is_dir():
        urls = []
        for f in ds_dir.glob("*.y*ml"):
            for ds in (load_yaml(f.read_text(encoding="utf-8"), str(f)) or {}).get("datasources", []):
                urls.append(ds.get("url"))
        check("http://prometheus:9090" in urls, "grafana: the Prometheus data source is http://prometheus:9090", str(urls))
    if db_dir and db_dir.is_dir():
        for f in db_dir.glob("*.y*ml"):
            for prov in (load_yaml(f.read_text(encoding="utf-8"), str(f)) or {}).get("providers", []):
                path = prov.get("options", {}).get("path", "")
                repo_path = container_to_repo(graf_binds, path)
                check(repo_path is not None and (repo_path / "shenguan.json").is_file(),
                      f"grafana: dashboard provider path {path} shows monitoring/grafana/dashboards/shenguan.json",
                      str(repo_path))
    home = env_map(graf.get("environment")).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        repo_path = container_to_repo(graf_binds, home)
        check(repo_path is not None and repo_path.is_file(), f"grafana: home dashboard {home} is mounted", str(repo_path))


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def check_dockerfile() -> None:
    section("Dockerfile")
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    ins = dockerfile_instructions(text)
    froms = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "FROM"]
    check(len(froms) >= 2, "multi-stage build", f"{len(froms)} FROM")
    if len(froms) < 2:
        return
    args = {m.group(1): m.group(2) for w, r in ins if w == "ARG"
            for m in [re.match(r"(\w+)=(\S+)", r)] if m}

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s)

    first = expand(froms[0][1])
    check(re.match(r"rust:1(\.\d+)*-bookworm\s+AS\s+\w+", first, re.I) is not None,
          "build stage: the official rust:1-bookworm image", first)
    last_index, last = froms[-1][0], expand(froms[-1][1])
    check(re.match(r"(debian:bookworm-slim|gcr\.io/distroless/cc)", last) is not None,
          "runtime stage: debian:bookworm-slim or distroless cc", last)
    build_stage = ins[froms[0][0]:froms[1][0]]
    runs = " ".join(r for w, r in build_stage if w == "RUN")
    check("cargo build --release --locked" in runs, "builds with cargo build --release --locked")
    copies = [r for w, r in build_stage if w == "COPY"]
    first_src = next((i for i, c in enumerate(copies) if "src" in c.split()), None)
    check(bool(copies) and "Cargo.lock" in copies[0] and first_src not in (None, 0)
          and runs.count("cargo build") >= 2,
          "dependencies are built in their own cached layer before the sources are copied")
    # Every file the sources embed (include_str!/include_bytes!) is copied into the build stage.
    copied = [src.rstrip("/") for c in copies for src in c.split()[:-1] if not src.startswith("--")]
    sources = sorted((REPO / "src").rglob("*.rs")) + sorted((REPO / "crates").rglob("src/**/*.rs"))
    for rs in sources:
        text = rs.read_text(encoding="utf-8")
        for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            target = (rs.parent / inc).resolve()
            rel = target.relative_to(REPO).as_posix() if target.is_relative_to(REPO) else str(target)
            check(any(rel == c or rel.startswith(c + "/") for c in copied),
                  f"build stage copies {rel} ({rs.relative_to(REPO)} includes it)")
        # askama reads `#[template(path = "…")]` from templates/ when the crate compiles.
        for tpl in re.findall(r'#\[template\(\s*path\s*=\s*"([^"]+)"', text):
            rel = f"templates/{tpl}"
            check(any(rel == c or rel.startswith(c + "/") for c in copied),
                  f"build stage copies {rel} ({rs.relative_to(REPO)} renders it)")
    # Every crate of the workspace and every target its manifest names is in the build stage.
    for member in re.findall(r'"(crates/[^"]+)"', (REPO / "Cargo.toml").read_text(encoding="utf-8")):
        check(any(member == c or member.startswith(c + "/") for c in copied),
              f"build stage copies the workspace member {member}")
    for bench in re.findall(r'\[\[bench\]\]\s*name\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(encoding="utf-8")):
        check(f"benches/{bench}.rs" in runs or any(c == "benches" for c in copied),
              f"the benchmark target benches/{bench}.rs exists in both build steps")
    runtime = ins[last_index:]
    users = [r for w, r in runtime if w == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), "runtime runs as a non-root user", str(users))
    check(bool(users) and users[-1].split(":")[0] == "10001", "runtime user is uid 10001 (what the chart sets)")
    check(any(w == "EXPOSE" and "8080" in r.split() for w, r in runtime), "EXPOSE 8080")
    check(any(w == "HEALTHCHECK" for w, r in runtime), "HEALTHCHECK")
    check(any(w == "COPY" and r.startswith("--from=") for w, r in runtime), "the runtime copies the binary from the build stage")
    check(any(w == "ENTRYPOINT" and "shenguan" in r for w, r in runtime), "ENTRYPOINT is shenguan")
    labels = " ".join(r for w, r in runtime if w == "LABEL")
    for key in ("title", "description", "version", "revision", "source" if "image.source" in labels else "licenses"):
        check(f"org.opencontainers.image.{key}=" in labels, f"OCI label org.opencontainers.image.{key}")
    for w, r in ins:
        if w in ("ENV", "ARG"):
            check(re.search(r"(PASSWORD|SECRET|TOKEN)\w*=", r, re.I) is None, f"no secret in {w} {r[:40]}")
    # Every path copied from the build context exists and is not excluded by .dockerignore.
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = [l[1:].rstrip("/") for l in ignore if l.startswith("!")]
    for w, r in ins:
        if w != "COPY" or r.startswith("--from="):
            continue
        parts = [p for p in r.split() if not p.startswith("--")]
        for src in parts[:-1]:
            check((REPO / src).exists(), f"COPY source {src} exists")
            check(any(src == a or src.startswith(a + "/") for a in allowed),
                  f"COPY source {src} is in the .dockerignore allow-list")
    # The image's configuration points at the paths the Dockerfile fills.
    conf = (REPO / "deploy" / "shenguan.toml").read_text(encoding="utf-8")
    dests = [r.split()[-1] for w, r in runtime if w == "COPY"]
    for key, path in re.findall(r'^(\w+_(?:dir|file))\s*=\s*"([^"]+)"', conf, re.M):
        if key == "data_dir":
            check(path == "/var/lib/shenguan", "image config: data_dir /var/lib/shenguan")
            continue
        check(any(path == d or path.startswith(d.rstrip("/") + "/") for d in dests),
              f"image config: {key} {path} is filled by a COPY")
    check('listen = "0.0.0.0:8080"' in conf, "image config: listens on 0.0.0.0:8080")
    check("SHENGUAN_CONFIG=/etc/shenguan/shenguan.toml" in " ".join(r for w, r in runtime if w == "ENV"),
          "image: SHENGUAN_CONFIG points at the built-in configuration")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materialise", type=Path, metavar="DIR",
                        help="only render, and write the pod's files for the default and non-default values")
    args = parser.parse_args()
    print(f"Helm engine {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}); chart {CHART}")
    if args.materialise:
        args.materialise.mkdir(parents=True, exist_ok=True)
        materialise_all(args.materialise)
    else:
        check_copies()
        documented_values()
        check_schema()
        check_chart()
        check_compose()
        check_dockerfile()
    print(f"\n{CHECKS - len(FAILURES)} of {CHECKS} checks passed")
    if FAILURES:
        print(f"{len(FAILURES)} failed:")
        for f in FAILURES:
            print(f"  - {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
