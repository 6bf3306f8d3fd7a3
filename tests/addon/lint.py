#!/usr/bin/env python3
"""The community add-on linter's checks on the add-on folder, offline.

What it checks (the rules of the linter HA's example add-on repository runs in CI, as described
in ../shared/homeassistant/addon-linter/README.md; the schemas are read from there, never
copied into this repository):

* the manifest (`config.yaml`, `.yml` or `.json`) against the linter's `config.schema.json`, and
  a build file (`build.yaml`, `.yml` or `.json`), if there is one, against `build.schema.json`:
  JSON Schema draft 7, with Python's `re` for `pattern` (some patterns use Python syntax such as
  `(?P<name>...)`);
* error: a top-level key whose value equals the schema's `default` (the linter: "should be
  removed, it uses a default value");
* warning: an architecture Home Assistant dropped in 2025.12 (`armhf`, `armv7`, `i386`);
* warning: `webui` together with `ingress` (ingress replaces the web UI link).

Warnings fail the check too: CI keeps the add-on clean.

Usage:
    tests/addon/lint.py [ADDON_DIR] [--schemas DIR]
    tests/addon/lint.py --self-test [--schemas DIR]

ADDON_DIR defaults to addon/ of this repository, --schemas to ../shared/homeassistant/addon-linter
beside the repository. Exit status: 0 clean, or `skipping: ...` when the schemas are absent; 1
problems found (or a self-test failure); 2 an unreadable file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMAS = ROOT.parent / "shared" / "homeassistant" / "addon-linter"
DROPPED_ARCHS = ("armhf", "armv7", "i386")


def same(a, b) -> bool:
    """Equal as JSON values: `true` is not `1`, `10` is `10.0`, containers element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def schema_errors(document, schema: dict) -> list[str]:
    validator = Draft7Validator(schema)
    return [
        f"error: schema: {where(e)}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    ]


def default_errors(document, schema: dict) -> list[str]:
    if not isinstance(document, dict):
        return []
    out = []
    for key, value in document.items():
        prop = schema.get("properties", {}).get(key)
        if isinstance(prop, dict) and "default" in prop and same(value, prop["default"]):
            out.append(
                f"error: `{key}` should be removed, it uses a default value "
                f"({json.dumps(prop['default'])})"
            )
    return out


def manifest_warnings(manifest) -> list[str]:
    if not isinstance(manifest, dict):
        return []
    out = []
    for arch in manifest.get("arch") or []:
        if arch in DROPPED_ARCHS:
            out.append(
                f"warning: architecture `{arch}` was dropped by Home Assistant in 2025.12: "
                "remove it from `arch`"
            )
    if manifest.get("ingress") and "webui" in manifest:
        out.append("warning: `webui` should be removed: ingress is enabled")
    return out


def lint_manifest(manifest, schema: dict) -> list[str]:
    return schema_errors(manifest, schema) + default_errors(manifest, schema) + manifest_warnings(manifest)


def lint_build(build, schema: dict) -> list[str]:
    return schema_errors(build, schema) + default_errors(build, schema)


def load(path: Path):
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def find(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}.{ext}" for ext in ("yaml", "yml", "json") if (folder / f"{stem}.{ext}").is_file()]
    return found[0] if found else None


def lint_folder(folder: Path, schemas: Path) -> tuple[list[str], list[Path]]:
    """(problems, files checked); problems are prefixed with their file."""
    config_schema = json.loads((schemas / "config.schema.json").read_text(encoding="utf-8"))
    build_schema = json.loads((schemas / "build.schema.json").read_text(encoding="utf-8"))
    manifest = find(folder, "config")
    if manifest is None:
        return [f"{folder}: error: no config.yaml, config.yml or config.json"], []
    problems = [f"{rel(manifest)}: {p}" for p in lint_manifest(load(manifest), config_schema)]
    checked = [manifest]
    build = find(folder, "build")
    if build is not None:
        problems += [f"{rel(build)}: {p}" for p in lint_build(load(build), build_schema)]
        checked.append(build)
    return problems, checked


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def self_test(schemas: Path) -> list[str]:
    """The rules on small manifests, each broken in one way: every break must be reported, and
    the clean one must pass. Returns the failures."""
    config_schema = json.loads((schemas / "config.schema.json").read_text(encoding="utf-8"))
    build_schema = json.loads((schemas / "build.schema.json").read_text(encoding="utf-8"))
    clean = {
        "name": "x",
        "version": "1.0.0",
        "slug": "x",
        "description": "x",
        "arch": ["amd64", "aarch64"],
        "ingress": True,
        "timeout": 30,
        "map": ["addon_config:rw", "media:rw"],
        "services": ["mqtt:want"],
    }
    cases = [
        ({}, None),
        ({"startup": "application"}, "`startup` should be removed, it uses a default value"),
        ({"boot": "auto"}, "`boot` should be removed"),
        ({"init": True}, "`init` should be removed"),
        ({"backup": "hot"}, "`backup` should be removed"),
        ({"ingress_port": 8099}, "`ingress_port` should be removed"),
        ({"timeout": 10}, "`timeout` should be removed"),
        ({"arch": ["amd64", "armv7"]}, "architecture `armv7` was dropped"),
        ({"webui": "http://[HOST]:[PORT:8099]/"}, "`webui` should be removed: ingress is enabled"),
        ({"services": ["mqtt:maybe"]}, "error: schema: services[0]:"),
        ({"map": ["app_config:rw"]}, "error: schema: map:"),
        ({"startup": "sometimes"}, "error: schema: startup:"),
        ({"slug": None}, "'slug' is a required property"),
        ({"slug": 7}, "error: schema: slug: 7 is not of type 'string'"),
        ({"colour": "red"}, "error: schema: (top level): Additional properties"),
    ]
    failures = []
    for change, expected in cases:
        manifest = {**clean, **change}
        manifest = {k: v for k, v in manifest.items() if v is not None}
        problems = lint_manifest(manifest, config_schema)
        if expected is None and problems:
            failures.append(f"clean manifest reported: {problems}")
        elif expected is not None and not any(expected in p for p in problems):
            failures.append(f"{change}: expected a problem containing {expected!r}, got {problems}")
    if not any("`timeout`" in p for p in lint_manifest({**clean, "timeout": 10.0}, config_schema)):
        failures.append("timeout 10.0 equals the default 10 and was not reported")
    as_int = lint_manifest({**clean, "init": 1}, config_schema)
    if any("`init` should be removed" in p for p in as_int) or not any("schema: init:" in p for p in as_int):
        failures.append(f"init: 1 must be a type error, not the default `true`: {as_int}")
    if not any("`squash` should be removed" in p for p in lint_build({"squash": False}, build_schema)):
        failures.append("build.yaml `squash: false` (its default) was not reported")
    if lint_build({"build_from": {"amd64": "ghcr.io/home-assistant/base:3.23"}}, build_schema):
        failures.append("a valid build.yaml was reported")
    if not lint_build({"build_from": {"amd64": "not an image"}}, build_schema):
        failures.append("an invalid build_from image was not reported")
    return failures


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("addon_dir", nargs="?", type=Path, default=ROOT / "addon")
    ap.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS)
    ap.add_argument("--self-test", action="store_true", help="check that every rule reports what it should")
    args = ap.parse_args(argv)

    needed = [args.schemas / "config.schema.json", args.schemas / "build.schema.json"]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        print(f"skipping: the add-on linter's schemas are absent ({', '.join(map(str, missing))})")
        return 0

    if args.self_test:
        failures = self_test(args.schemas)
        for f in failures:
            print(f"self-test: FAILED: {f}")
        print(f"add-on linter self-test: {'failed' if failures else 'every rule reports its case'}")
        return 1 if failures else 0

    try:
        problems, checked = lint_folder(args.addon_dir, args.schemas)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}")
        return 2
    for p in problems:
        print(p)
    names = ", ".join(rel(c) for c in checked) or str(args.addon_dir)
    if problems:
        print(f"add-on linter: {len(problems)} problem(s) in {names}")
        return 1
    print(f"add-on linter: {names} clean (schemas: {args.schemas})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
