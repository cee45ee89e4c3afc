"""Fault injection for the pipeline's stage scripts, loaded by test subprocesses through PYTHONPATH.

Only a process whose script lives in a `stages/` folder is touched (dvc itself is not). Set by
tests/pipeline_helpers.py's `stage_env`:
  SYNTHRATIO_TEST_REPLACE_LOG=<file>      append every os.replace and os.rename target (an atomic write finishing)
                                          to <file>
  SYNTHRATIO_TEST_NO_NETWORK=<file>       refuse internet connects and name lookups, logging each to <file>
  SYNTHRATIO_TEST_KILL=<script>:<glob>:<n>  SIGKILL the stage <script> right after its n-th replace or rename onto a
                                          path matching <glob>: a kill at a known point, with no cleanup run
"""

import fnmatch
import os
import signal
import socket
import sys
from pathlib import Path


def _stage() -> str | None:
    """File name of the running stage script, or None outside stages/."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return script.name if script is not None and script.parent.name == "stages" else None


def _log(variable: str, line: str) -> None:
    with open(os.environ[variable], "a") as handle:
        handle.write(f"{_stage()} {os.getpid()} {line}\n")


if os.environ.get("SYNTHRATIO_TEST_REPLACE_LOG"):
    _kill = os.environ.get("SYNTHRATIO_TEST_KILL", "").split(":")
    _seen = [0]

    def _watch(original):
        """`original` (os.replace or os.rename), then log the target and kill the stage if it is the chosen one."""

        def watched(src, dst, *args, **kwargs):
            original(src, dst, *args, **kwargs)
            if _stage() is None:
                return
            _log("SYNTHRATIO_TEST_REPLACE_LOG", os.path.abspath(os.fspath(dst)))
            if len(_kill) == 3 and _stage() == _kill[0] and fnmatch.fnmatch(os.fspath(dst), _kill[1]):
                _seen[0] += 1
                if _seen[0] == int(_kill[2]):
                    os.kill(os.getpid(), signal.SIGKILL)

        return watched

    os.replace, os.rename = _watch(os.replace), _watch(os.rename)


if os.environ.get("SYNTHRATIO_TEST_NO_NETWORK"):
    _INTERNET = (socket.AF_INET, socket.AF_INET6)
    _getaddrinfo = socket.getaddrinfo

    def _refuse(what: str) -> None:
        _log("SYNTHRATIO_TEST_NO_NETWORK", what)
        raise OSError(f"network blocked by the test: {what}")

    def _guard(original):
        def guarded(self, address):
            if _stage() is not None and self.family in _INTERNET:
                _refuse(f"{original.__name__} {address!r}")
            return original(self, address)

        return guarded

    def _guarded_getaddrinfo(host, *args, **kwargs):
        if _stage() is not None:
            _refuse(f"getaddrinfo {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = _guard(socket.socket.connect)
    socket.socket.connect_ex = _guard(socket.socket.connect_ex)
    socket.getaddrinfo = _guarded_getaddrinfo
