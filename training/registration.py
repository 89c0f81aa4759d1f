"""Checkpoints into the model registry: the default model adopted by an empty registry.

Imported by the API, which must not load torch at rest: a checkpoint is only
read (and torch imported) when one has to be registered.
"""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from db import registry
from db.schema import ModelVersion


def register_checkpoint(session: Session, path: Path, *, status: str, bundle=None, **fields) -> ModelVersion:
    """Register the checkpoint at ``path`` under the version it carries (``bundle``: it, already loaded)."""
    if bundle is None:
        from classifier.model import load_checkpoint  # torch, only now (see the module's note)

        bundle = load_checkpoint(path)  # InvalidCheckpoint when missing or unreadable
    fields.setdefault("metrics", bundle.metrics)
    fields.setdefault("data_summary", bundle.info.get("data"))
    fields.setdefault("split", _split_beside(Path(path)) or ({"name": bundle.info["split"]} if "split" in bundle.info else None))
    return registry.register_model(session, version=bundle.version, path=str(Path(path).resolve()), sha256=bundle.sha256, status=status, **fields)


def _split_beside(checkpoint: Path) -> dict | None:
    """A run folder's split.json (speaker lists), so the registry knows whom the model trained on."""
    path = checkpoint.parent / "split.json"
    try:
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("train", "val", "test")}
    except (OSError, ValueError):
        return None


def ensure_active_model(session: Session, default_path: Path) -> ModelVersion:
    """The active model; on an empty registry the configured default checkpoint becomes it.

    Processes starting together may race to register it: the loser finds the
    winner's row.
    """
    active = registry.active_model(session)
    if active is not None:
        return active
    try:
        return register_checkpoint(session, default_path, status="active")
    except registry.RegistryConflict:
        active = registry.active_model(session)
        if active is None:  # the version exists but is not active (someone retired it): make it so
            from classifier.model import load_checkpoint

            registry.promote(session, load_checkpoint(default_path).version)
            active = registry.active_model(session)
        return active


def adopt_updated_default(session: Session, *, active_version: str, active_path: str, bundle, default_path: Path) -> ModelVersion | None:
    """The new version in the default checkpoint (``bundle``, read from ``active_path``) when the active model was that file's old one, else None.

    An upgrade that ships a new default model rewrites its file in place, so
    the active row's file no longer matches its checksum and the old version
    cannot be served. When the active row is that default path and the file
    now carries another version, that version is registered and promoted
    (``expected_active``: a promotion by hand meanwhile wins). Workers racing
    here find the version registered and promoted by the first.
    """
    default_path = Path(default_path).resolve()
    if Path(active_path).resolve() != default_path or bundle.version == active_version:
        return None  # not the default file, or the same version rewritten: not an upgrade, the checksum error stands
    try:
        register_checkpoint(session, default_path, status="candidate", bundle=bundle, parent_version=active_version)
    except registry.RegistryConflict:
        pass  # another worker registered it first
    try:
        registry.promote(session, bundle.version, expected_active=active_version)
    except registry.RegistryConflict:
        pass  # promoted by another worker, or someone promoted by hand meanwhile
    now = registry.active_model(session)
    return now if now is not None and now.version == bundle.version and now.sha256 == bundle.sha256 else None
