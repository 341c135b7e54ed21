"""Run the service in a child process on 127.0.0.1 (tests, benchmarks): start, wait, stop.

Example:
    >>> with ServerProcess("work/index") as server:
    ...     httpx.get(server.url + "/healthz").json()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from sbe.errors import SbeError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m sbe.service`` in a child process, bound to 127.0.0.1 on a free port.

    Args:
        index_dir, model_dir, photos: as for :func:`sbe.service.serve`.
        start_timeout: seconds to wait for ``/healthz`` (the model loads first).
        lifetime: the child is started under ``timeout`` so it exits by itself after this many
            seconds even if the parent dies without stopping it.
        env: extra environment variables for the child.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        pid: the server's process id (for memory measurements).
    """

    def __init__(
        self,
        index_dir: str | Path,
        model_dir: str | Path | None = None,
        *,
        photos: str | Path | None = None,
        start_timeout: float = 180.0,
        lifetime: float = 900.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "sbe.service", "--index", str(index_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if model_dir is not None:
            cmd += ["--model", str(model_dir)]
        if photos is not None:
            cmd += ["--photos", str(photos)]
        self.cmd = cmd
        self.start_timeout = start_timeout
        self.lifetime = lifetime
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Start the child and wait until ``/healthz`` answers.

        Raises:
            SbeError: the child exited or did not answer within ``start_timeout``.
        """
        # stderr goes to a file: a pipe nobody reads would block a chatty server
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        self.proc = subprocess.Popen(
            ["timeout", "-s", "INT", str(int(self.lifetime)), *self.cmd]
            if _has_timeout()
            else self.cmd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log()
                raise SbeError(f"the server exited with {self.proc.returncode}: {err}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SbeError(f"the server did not answer {self.url}/healthz in {self.start_timeout} s")

    def server_pid(self) -> int:
        """The pid of the Python server itself (the child of ``timeout`` when one wraps it)."""
        import psutil

        p = psutil.Process(self.pid)
        kids = p.children()
        return kids[0].pid if kids and p.name() == "timeout" else p.pid

    def stop(self, wait: float = 20.0) -> int:
        """Ask the server to shut down (SIGINT, as Ctrl-C); kill it if it has not within ``wait``.

        Returns:
            Its exit code.
        """
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        return int(self.returncode)

    def log(self) -> str:
        """What the server wrote to stderr so far (its last 2000 characters at most)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _has_timeout() -> bool:
    import shutil

    return shutil.which("timeout") is not None
