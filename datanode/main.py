"""``slotkeeper datanode``: settings, logging, the event loop."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Sequence

import uvloop

from clusterstate.topology import TopologyError

from .config import ConfigError, load_settings, parse_args
from .identity import IdentityError
from .server import serve
from .snapshot import SnapshotError


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"slotkeeper datanode: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The keyspace holds few reference cycles; a high threshold keeps the cyclic
    # collector from scanning millions of values on the hot path.
    gc.set_threshold(200_000, 50, 100)
    try:
        uvloop.run(serve(settings))
    except (SnapshotError, TopologyError, IdentityError) as exc:
        print(f"slotkeeper datanode: refusing to start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"slotkeeper datanode: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
