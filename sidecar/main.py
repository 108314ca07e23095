"""``slotkeeper sidecar``: settings, logging, the event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, load_config, parse_args
from .supervisor import Sidecar


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"slotkeeper sidecar: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aiohttp.access", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return asyncio.run(Sidecar(config).run())
    except OSError as exc:
        print(f"slotkeeper sidecar: cannot start: {exc}", file=sys.stderr)
        return 1
