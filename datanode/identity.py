"""The node id: 40 lowercase hex chars, created on first start and kept in the data dir."""

from __future__ import annotations

import os
import re
from pathlib import Path

NODE_ID_FILE = "node-id"
_VALID = re.compile(r"^[0-9a-f]{40}$")


class IdentityError(ValueError):
    """The given or stored node id is not usable."""


def is_node_id(text: str) -> bool:
    return bool(_VALID.match(text))


def load_or_create_node_id(directory: str | Path, given: str = "") -> str:
    """The node id: ``given`` if set (it must match a stored one), else the stored one,
    else a new random id, stored atomically."""
    path = Path(directory) / NODE_ID_FILE
    stored = path.read_text().strip() if path.exists() else ""
    if stored and not is_node_id(stored):
        raise IdentityError(f"{path} holds an invalid node id {stored!r}")
    if given:
        if not is_node_id(given):
            raise IdentityError(f"--node-id must be 40 lowercase hex characters, got {given!r}")
        if stored and stored != given:
            raise IdentityError(
                f"--node-id {given} differs from the id {stored} kept in {path}; "
                "a data dir belongs to one node"
            )
        node_id = given
    else:
        node_id = stored or os.urandom(20).hex()
    if node_id != stored:
        Path(directory).mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(node_id + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return node_id
