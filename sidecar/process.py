"""Optional supervision of the data node process (``--supervise "<command>"``).

Without it the sidecar restarts nothing (systemd or the orchestrator does). With
it, the sidecar runs the command and starts it again whenever it exits, after a
backoff that grows from 0.5 s to 10 s (reset once it ran for a minute). On the
sidecar's clean shutdown the data node gets SIGTERM (it saves its snapshot) and
SIGKILL if it is still there after ``stop_timeout``; if the sidecar itself dies,
the data node gets SIGTERM from the kernel (PDEATHSIG), so a restarted sidecar
never finds an orphan holding the ports.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


def next_delay(previous: float, ran_for: float) -> float:
    """Backoff before the next start (pure)."""
    if ran_for >= 60.0:
        return 0.5
    return min(10.0, max(0.5, previous * 2))


class SupervisedDatanode:
    def __init__(self, argv: Sequence[str], *, stop_timeout: float = 30.0) -> None:
        if not argv:
            raise ValueError("an empty command cannot be supervised")
        self.argv = list(argv)
        self.stop_timeout = stop_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = False

    def command(self) -> list[str]:
        """The command, wrapped so that the data node gets SIGTERM (and saves its
        snapshot) if the sidecar dies without stopping it (Linux ``setpriv``)."""
        setpriv = shutil.which("setpriv")
        if setpriv is None or not sys.platform.startswith("linux"):
            return list(self.argv)
        return [setpriv, "--pdeathsig", "TERM", "--", *self.argv]

    async def run(self) -> None:
        delay = 0.25
        while not self._stopping:
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(*self.command(),
                                                             stdin=asyncio.subprocess.DEVNULL)
            self.starts += 1
            log.info("data node started (pid %d): %s", self.proc.pid, " ".join(self.argv))
            rc = await self.proc.wait()
            if self._stopping:
                return
            ran = time.monotonic() - started
            delay = next_delay(delay, ran)
            log.warning("data node exited with %s after %.1fs: restarting in %.1fs", rc, ran,
                        delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("data node still running %.0fs after SIGTERM: killing it",
                        self.stop_timeout)
            proc.kill()
            await proc.wait()
        log.info("data node stopped (exit %s)", proc.returncode)
