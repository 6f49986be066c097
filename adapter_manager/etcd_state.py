"""The desired state in etcd, for several nodes: the same compare-and-set interface as the file manifest.

The whole state is one key, `<prefix>desired`, holding the manifest's JSON (`{"format", "models"}`). Its
generation is the key's mod_revision: a write is a transaction that puts the new state only if the key's
mod_revision is still the one read, so two writers never both win, and no lock is held across a load. A
read is linearizable: once a write is acknowledged, every node that reads sees it.

`import_manifest` moves a single node's file manifest into etcd (`python -m adapter_manager.etcd_state`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from lora_core.errors import AdapterError
from lora_cluster.etcd import EtcdCluster, b64, unb64
from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import load_settings, read

from .manifest import (
    FORMAT_VERSION,
    AdapterManifest,
    ManifestEntry,
    ManifestState,
    parse_entries,
    stored_models,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX: str = read("ETCD_PREFIX", {})


class EtcdDesiredState:
    """DesiredStateStore over etcd (see the module doc); calls raise BackendUnavailable when no member
    answers."""

    remote = True

    def __init__(self, cluster: EtcdCluster, prefix: str = DEFAULT_PREFIX) -> None:
        self.cluster = cluster
        self.key = f"{prefix}desired"

    def signature(self) -> int:
        """The state's mod_revision, from a linearizable read of the key alone (no value): asked before every
        batch, so one quick round over the members; the caller serves its last state if none answers."""
        answer = self.cluster.post("kv/range", {"key": b64(self.key), "keys_only": True}, quick=True)
        kvs = answer.get("kvs") or []
        return int(kvs[0]["mod_revision"]) if kvs else 0

    def read(self) -> ManifestState:
        answer = self.cluster.post("kv/range", {"key": b64(self.key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return ManifestState(0, {})
        generation = int(kvs[0]["mod_revision"])
        try:
            document = json.loads(unb64(kvs[0].get("value", "")))
            models = document["models"]
            if not isinstance(models, dict):
                raise ValueError("models must be an object")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            # Not repaired here (unlike the file): the next acknowledged write replaces it whole.
            return ManifestState(generation, {}, [f"the desired state in etcd ({self.key}) is unreadable: {exc}"])
        entries, problems = parse_entries(models)
        return ManifestState(generation, entries, problems)

    def compare_and_set(self, expected_generation: int, entries: Mapping[str, ManifestEntry]) -> bool:
        value = json.dumps({"format": FORMAT_VERSION, "models": stored_models(entries)}, ensure_ascii=False)
        answer = self.cluster.post(
            "kv/txn",
            {
                "compare": [
                    {"key": b64(self.key), "target": "MOD", "result": "EQUAL", "mod_revision": expected_generation}
                ],
                "success": [{"request_put": {"key": b64(self.key), "value": b64(value)}}],
            },
        )
        return bool(answer.get("succeeded"))


def import_manifest(manifest: AdapterManifest, store: EtcdDesiredState, replace: bool = False) -> int:
    """Copy a file manifest's entries into etcd; refuses to overwrite a non-empty state unless `replace`.
    Returns the number of models imported."""
    source = manifest.read()
    for problem in source.problems:
        log.warning("not imported: %s", problem)
    current = store.read()
    if current.entries and not replace:
        raise SystemExit(
            f"etcd already holds a desired state with {len(current.entries)} models ({store.key}); "
            "pass --replace to overwrite it"
        )
    if not store.compare_and_set(current.generation, source.entries):
        raise SystemExit("the desired state in etcd changed during the import; run it again")
    return len(source.entries)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(EtcdSettings)  # the ETCD_* settings, each flag's default
    except ValueError as exc:
        sys.exit(str(exc))
    parser = argparse.ArgumentParser(
        description="Import a single node's desired state (STATE_DIR/manifest.json) into etcd, to move to many nodes.",
        epilog="From the environment: ETCD_PASSWORD; for https:// endpoints, ETCD_CA_CERT, ETCD_CERT, ETCD_KEY.",
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="the node's STATE_DIR")
    parser.add_argument("--endpoints", default=settings.etcd_endpoints, help="comma-separated")
    parser.add_argument("--user", default=settings.etcd_user)  # its password only from ETCD_PASSWORD: `ps` shows argv
    parser.add_argument("--prefix", default=settings.etcd_prefix)
    parser.add_argument("--replace", action="store_true", help="overwrite a desired state etcd already holds")
    args = parser.parse_args(argv)
    settings = replace(settings, etcd_endpoints=args.endpoints, etcd_user=args.user, etcd_prefix=args.prefix)
    try:
        settings.check_etcd()
    except ValueError as exc:
        parser.error(str(exc))
    cluster = settings.etcd_cluster()
    if cluster is None:
        parser.error("--endpoints (or ETCD_ENDPOINTS) is required")
    store = EtcdDesiredState(cluster, settings.etcd_prefix)
    try:
        count = import_manifest(AdapterManifest(args.state_dir), store, args.replace)
    except AdapterError as exc:
        sys.exit(f"{exc.code}: {exc.message}")
    print(f"imported {count} models into {store.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
