"""Check generated autoscaling objects against the real schemas.

* KEDA ``ScaledObject``: the ``openAPIV3Schema`` of KEDA's own CRD
  (``config/crd/bases/keda.sh_scaledobjects.yaml`` in the ``github.com/kedacore/keda/v2``
  Go module, fetched once through the Go module proxy with ``go mod download`` and cached
  under ``.cache/schemas/``), checked with :mod:`jsonschema`, plus the API server's strict
  field validation: a field the schema does not declare is an error, as
  ``kubectl apply --validate=strict`` would report it.
* HPA (``autoscaling/v2``) and ConfigMap (``v1``): Kubernetes' OpenAPI schemas as shipped
  by the ``kubernetes-validate`` package (strict variant: unknown fields are errors).

The prometheus-adapter's config has no published schema and its Go module is not served by
the module proxy; its structure is tested against the adapter's documented fields instead.

Usage::

    python -m redline_operator.autoscaling.schemas fetch     # make schemas
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

__all__ = ["KEDA_MODULE", "KEDA_VERSION", "K8S_VERSION", "keda_crd_path", "fetch_keda_crd",
           "keda_errors", "k8s_errors", "SchemaUnavailable"]

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
K8S_VERSION = "1.37.0"
_CRD = "config/crd/bases/keda.sh_scaledobjects.yaml"
CACHE = Path(".cache") / "schemas"


class SchemaUnavailable(RuntimeError):
    """The schema could not be fetched (no Go toolchain, or the module proxy refused)."""


def keda_crd_path(cache: Path = CACHE) -> Path:
    return cache / f"keda-{KEDA_VERSION}" / Path(_CRD).name


def fetch_keda_crd(cache: Path = CACHE) -> Path:
    """KEDA's ScaledObject CRD, downloaded from the Go module proxy once and cached."""
    dest = keda_crd_path(cache)
    if dest.is_file():
        return dest
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go")
                                else None)
    if go is None:
        raise SchemaUnavailable("`go` is not on PATH: cannot fetch the KEDA module")
    proc = subprocess.run([go, "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"],
                          capture_output=True, text=True, timeout=600, cwd="/")
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "Dir" not in info:
        raise SchemaUnavailable(f"go mod download {KEDA_MODULE}@{KEDA_VERSION} failed: "
                                f"{info.get('Error') or proc.stderr.strip()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(Path(info["Dir"]) / _CRD, tmp)
    os.replace(tmp, dest)
    return dest


def _crd_schema(crd: Path, version: str) -> dict:
    doc = YAML(typ="safe").load(crd.read_text())
    for v in doc["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise SchemaUnavailable(f"{crd}: no version {version}")


def _unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields of ``obj`` the structural schema does not declare (strict validation)."""
    out: list[str] = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            where = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out += _unknown_fields(value, props[key], where)
            elif isinstance(extra, dict):
                out += _unknown_fields(value, extra, where)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                if path == "metadata" or key in ("apiVersion", "kind"):
                    continue
                out.append(f"{where}: unknown field")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def keda_errors(obj: dict, crd: Path) -> list[str]:
    """Schema errors of a ScaledObject against KEDA's CRD ('' list when valid)."""
    import jsonschema

    version = obj.get("apiVersion", "").split("/")[-1]
    schema = _crd_schema(crd, version)
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
              for e in validator.iter_errors(obj)]
    return errors + _unknown_fields(obj, schema)


def k8s_errors(obj: dict, version: str = K8S_VERSION) -> list[str]:
    """Schema errors of a built-in object against Kubernetes' OpenAPI schema (strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path) or '(top)'}: {exc.message}"]
    return []


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m redline_operator.autoscaling.schemas fetch")
    try:
        print(fetch_keda_crd())
    except SchemaUnavailable as exc:
        sys.exit(f"schemas: {exc}")
