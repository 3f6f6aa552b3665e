"""Checks Kubernetes manifests against the API's own types (the `kubernetes` Python client's
models, generated from the API's OpenAPI spec): every field known, every value of its type.

Usage: check_manifests.py FILE...   (a kustomization.yaml is rendered with `kubectl kustomize`
and what it renders is checked)

Prints one line per file (its objects, by kind) and exits 1 with one line per problem:
file, document, the field's path, and what is wrong. Custom resources (kinds the client has
no model for) are reported as not checked.
"""

import os
import subprocess
import sys

import kubernetes.client as k8s
import yaml

SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def model(api_version, kind):
    group_version = api_version.split("/")[-1]
    return getattr(k8s, f"{group_version.capitalize()}{kind}", None)


def check(value, type_name, path, problems):
    if type_name == "object":  # IntOrString, Quantity, raw JSON: any scalar or structure
        return
    if type_name in SCALARS:
        expected = SCALARS[type_name]
        if not isinstance(value, expected) or (type_name != "bool" and isinstance(value, bool)):
            problems.append(f"{path}: {value!r} is not {type_name}")
        return
    if type_name in ("datetime", "date"):
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, type_name[5:-1], f"{path}[{i}]", problems)
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map")
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check(item, inner, f"{path}.{key}", problems)
        return
    cls = getattr(k8s, type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} object")
        return
    by_json_name = {json: attr for attr, json in cls.attribute_map.items()}
    for key, item in value.items():
        attr = by_json_name.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        check(item, cls.openapi_types[attr], f"{path}.{key}", problems)


def check_documents(label, documents, problems):
    kinds = []
    for i, doc in enumerate(documents):
        where = f"{label} document {i + 1}"
        cls = model(doc.get("apiVersion", ""), doc.get("kind", ""))
        if cls is None:
            kinds.append(f"{doc.get('kind')} (custom resource, not checked)")
            continue
        check(doc, cls.__name__, f"{where} ({doc['kind']})", problems)
        kinds.append(doc["kind"])
    line = f"{label}: {', '.join(kinds)}"
    print(line)
    return line


def check_file(path, problems):
    if os.path.basename(path) == "kustomization.yaml":
        # What `kubectl apply -k` would send: rendered by kubectl's own kustomize.
        rendered = subprocess.run(
            ["kubectl", "kustomize", os.path.dirname(path) or "."],
            capture_output=True,
            text=True,
        )
        if rendered.returncode != 0:
            problems.append(f"{path}: kubectl kustomize failed: {rendered.stderr.strip()}")
            return None
        documents = [d for d in yaml.safe_load_all(rendered.stdout) if d is not None]
        return check_documents(f"{path} (kubectl kustomize)", documents, problems)
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d is not None]
    return check_documents(path, documents, problems)


def main():
    problems = []
    for path in sys.argv[1:]:
        check_file(path, problems)
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


main()
