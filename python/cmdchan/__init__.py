"""cmdchan for Python: run allowlisted commands on cmdchan servers over TLS-PSK.

The protocol is the Rust client library's (no second implementation to drift): this
package is a thin layer over it. Every result is shaped like the object ``cmdchan
--json`` prints (``Result.json()`` gives exactly that object), every failure is an
exception that carries the command's code, number and exit status, and the GIL is
released while a call waits on the network.

    import cmdchan
    client = cmdchan.Client("alice.cred", inventory=["inventory.toml"])
    print(client.run("web03", "uptime").stdout.decode())
    for server in client.fanout("@web", "restart-service", "nginx"):
        print(server.name, server.exit)
"""

from __future__ import annotations

import binascii
import os

from . import _native

# The hints are for type checkers only: importing typing (and base64, re) would cost a
# short script more than a fan-out's first results.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

    Stdin = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes], None]
    Params = Optional[Mapping[str, Any]]

__all__ = [
    "Client",
    "Result",
    "ServerResult",
    "FanOut",
    "Stream",
    "Error",
    "Refused",
    "Unreachable",
    "Timeout",
    "ConnectionLost",
    "ProtocolError",
    "UsageError",
    "approval_request",
    "approval_sign",
    "approval_show",
    "job_id",
]

#: The client's version and the protocol it speaks, as ``cmdchan --version`` says.
VERSION = _native.PROTOCOL

class Error(Exception):
    """A call that did not get a result: the server refused it, or it never reached
    one. ``code`` and ``number`` are the command's (PROTOCOL.md §6 for the server's,
    100 and up for the client's own), ``exit`` the status ``cmdchan`` would exit with."""

    def __init__(self, obj: Dict[str, Any]):
        error = obj.get("error", {})
        self.code: str = error.get("code", "unknown")
        self.number: int = error.get("number", 0)
        self.message: str = error.get("message", "")
        self.retry_after_ms: Optional[int] = error.get("retry_after_ms")
        self.exit: int = obj.get("exit", 1)
        self._json = obj
        super().__init__(f"{self.code}: {self.message}")

    def json(self) -> Dict[str, Any]:
        """The object ``cmdchan --json`` prints for this failure."""
        return self._json


class Refused(Error):
    """The server refused the request (codes 1–99): nothing ran."""


class Unreachable(Error):
    """No server answered as the one meant: cannot connect, no TLS reply, refused before
    TLS, not TLS, a failed handshake, or a server of another zone."""


class Timeout(Error):
    """No sign of life from the server for the answer timeout."""


class ConnectionLost(Error):
    """The connection was lost, after the retries."""


class ProtocolError(Error):
    """The server broke the protocol."""


class UsageError(Error, ValueError):
    """The call cannot be made as asked (an address, a zone, the credential, stdin)."""


_UNREACHABLE = {"cannot connect", "handshake failed", "refused before tls", "not tls", "no tls reply", "wrong zone"}


_USAGE = {"usage", "credential", "no address", "no zone key", "stdin"}


def _error(obj: Dict[str, Any]) -> Error:
    error = obj.get("error", {})
    number, code = error.get("number", 0), error.get("code", "")
    if number < 100:
        return Refused(obj)
    if code in _UNREACHABLE:
        return Unreachable(obj)
    if code == "timeout":
        return Timeout(obj)
    if code == "connection lost":
        return ConnectionLost(obj)
    if code == "protocol error":
        return ProtocolError(obj)
    if code in _USAGE:
        return UsageError(obj)
    return Error(obj)  # "not started", "tls setup", and codes of a newer client


def _text(obj: Dict[str, Any], stream: str) -> bytes:
    data = obj.get(stream)
    if data is None:
        return b""
    if obj.get(stream + "_encoding") == "base64":
        return binascii.a2b_base64(data)
    return data.encode()


class Result:
    """What a server answered: a program's exit and output, or a built-in's reply.

    ``exit`` is the status ``cmdchan`` would exit with (a program's own code, 124 if it
    timed out, 128+N if signal N ended it; 0 for a built-in)."""

    def __init__(self, obj: Dict[str, Any]):
        self._json = obj
        self.exit: int = obj["exit"]
        self.reply: Any = obj["reply"]
        shown = self.reply if isinstance(self.reply, dict) else {}
        self.stdout: bytes = _text(shown, "stdout")
        self.stderr: bytes = _text(shown, "stderr")
        self.program: Optional[Dict[str, Any]] = shown.get("exit") if "stdout" in shown else None

    @property
    def ok(self) -> bool:
        """Whether the command succeeded (exit status 0)."""
        return self.exit == 0

    @property
    def job_id(self) -> Optional[str]:
        """The job ID of a command started with ``detach=True``."""
        job = self.reply.get("job") if isinstance(self.reply, dict) else None
        return job["id"] if job else None

    @property
    def jobs(self) -> List[Dict[str, Any]]:
        """The jobs of a ``job.*`` reply."""
        return self.reply.get("jobs", []) if isinstance(self.reply, dict) else []

    def json(self) -> Dict[str, Any]:
        """Exactly the object ``cmdchan --json`` prints for this result."""
        return self._json

    def __repr__(self) -> str:
        return f"Result(exit={self.exit}, stdout={len(self.stdout)} bytes, stderr={len(self.stderr)} bytes)"


def _usage(e: ValueError) -> UsageError:
    return UsageError({"exit": 64, "error": {"code": "usage", "number": 100, "message": str(e)}})


def _call(fn: Any, *args: Any) -> Any:
    """A native call; what it refuses before any server is asked is a UsageError."""
    try:
        return fn(*args)
    except ValueError as e:
        raise _usage(e) from None


def _result(obj: Dict[str, Any]) -> Result:
    if not obj.get("ok") and "error" in obj:
        raise _error(obj)
    return Result(obj)


class ServerResult:
    """One server's end in a fan-out: as a line of ``cmdchan --json --on`` says it."""

    def __init__(self, obj: Dict[str, Any]):
        self._json = obj
        self.name: str = obj["server"]
        self.address: str = obj["address"]
        self.ok: bool = obj["ok"]
        self.exit: Optional[int] = obj["exit"]
        self.stdout: bytes = _text(obj, "stdout")
        self.stderr: bytes = _text(obj, "stderr")
        self.duration_ms: int = obj["duration_ms"]
        self.program: Optional[Dict[str, Any]] = obj.get("program")
        self.reply: Any = obj.get("reply")
        self.error: Optional[Error] = _error(obj) if "error" in obj else None

    def json(self) -> Dict[str, Any]:
        return self._json

    def __repr__(self) -> str:
        return f"ServerResult({self.name!r}, ok={self.ok}, exit={self.exit})"


class FanOut:
    """A fan-out as it runs: iterate for each server's :class:`ServerResult` as it
    finishes (``async for`` works too); ``summary`` once it is over."""

    def __init__(self, native: Any):
        self._native = native
        self.summary: Optional[Dict[str, Any]] = None

    def _next(self) -> Optional[ServerResult]:
        obj = self._native.next()
        if obj is None:
            return None
        if "summary" in obj:
            self.summary = obj["summary"]
            return self._next()
        return ServerResult(obj)

    def __iter__(self) -> Iterator[ServerResult]:
        while True:
            server = self._next()
            if server is None:
                return
            yield server

    def __aiter__(self) -> AsyncIterator[ServerResult]:
        return self._async()

    async def _async(self) -> AsyncIterator[ServerResult]:
        import asyncio  # here: importing it costs a synchronous caller tens of milliseconds

        while True:
            server = await asyncio.to_thread(self._next)
            if server is None:
                return
            yield server


class Stream:
    """A call's output as it arrives: iterate for ``(stream, data)`` pairs (``stream``
    is ``"stdout"`` or ``"stderr"``); ``result`` once it is over. A failure is raised
    at the end of the iteration."""

    def __init__(self, native: Any):
        self._native = native
        self.result: Optional[Result] = None

    def __iter__(self) -> Iterator[Tuple[str, bytes]]:
        while True:
            item = self._native.next()
            if item is None:
                return
            stream, data = item
            if stream == "result":
                self.result = _result(data)
                continue
            yield stream, data


def _params(params: Params) -> List[Tuple[str, str]]:
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return [(k, text(v)) for k, v in (params or {}).items()]


class _Stdin:
    """What a call sends as stdin. Bytes are sent as they are; a path, or a file with a
    descriptor, is opened by the call itself (through a duplicate of the descriptor,
    closed once the call has it) and read as it is sent, a pipe included, without
    holding it all; a regular file from its current position. Another file object is
    read whole first. Use it as a context manager around the native call."""

    def __init__(self, stdin: Stdin):
        self.data: Optional[bytes] = None
        self.path: Optional[str] = None
        self.offset: Optional[int] = None
        self._dup: Optional[int] = None
        if stdin is None:
            return
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            self.data = bytes(stdin)
        elif isinstance(stdin, str):
            self.data = stdin.encode()
        elif isinstance(stdin, os.PathLike):
            self.path = os.fspath(stdin)
        else:
            try:
                fd = stdin.fileno()
            except (AttributeError, OSError, ValueError):
                self.data = stdin.read()
                return
            if getattr(stdin, "seekable", lambda: False)():
                self.offset = stdin.tell()
            self._dup = os.dup(fd)
            self.path = f"/proc/self/fd/{self._dup}"

    def __enter__(self) -> "_Stdin":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dup is not None:
            os.close(self._dup)


class Client:
    """A cmdchan client: one credential file and its settings.

    ``credential`` is a file from ``cmdchan-server admin provision``; ``inventory`` the
    sources ``--inventory`` takes (a TOML file, or ``exec:COMMAND``), for server names
    and fan-out selectors; ``zone`` the zone when the credential holds several and the
    inventory does not say. ``retries`` is how many times a lost connection is made
    again and the same request sent (the same command ID: never run twice)."""

    def __init__(
        self,
        credential: Union[str, "os.PathLike[str]"],
        *,
        zone: Optional[str] = None,
        inventory: Sequence[str] = (),
        connect_timeout: float = 10.0,
        answer_timeout: float = 30.0,
        retries: int = 3,
        max_output: int = 16 << 20,
    ):
        try:
            self._native = _native.Native(
                os.fspath(credential), zone, list(inventory), connect_timeout, answer_timeout, retries, max_output
            )
        except ValueError as e:
            message = str(e)
            if message.startswith("credential"):
                raise UsageError({"exit": 78, "error": {"code": "credential", "number": 101, "message": message}}) from None
            raise _usage(e) from None

    @property
    def name(self) -> str:
        """The credential holder's name."""
        return self._native.name

    def run(
        self,
        address: Optional[str],
        command: str,
        *args: str,
        params: Params = None,
        server_id: Optional[str] = None,
        stdin: Stdin = None,
        detach: bool = False,
    ) -> Result:
        """Runs ``command`` with ``args`` (and named ``params``) on one server: a name of
        the inventory, or ``HOST[:PORT]``. A program's non-zero exit is a result; a
        refusal or a failure to reach the server raises :class:`Error`."""
        with _Stdin(stdin) as s:
            return _result(
                _call(
                    self._native.run, address, command, list(args), _params(params), server_id,
                    s.data, s.path, s.offset, detach, None,
                )
            )

    async def run_async(self, address: Optional[str], command: str, *args: str, **options: Any) -> Result:
        """:meth:`run` for asyncio: it waits in a thread, without the GIL."""
        import asyncio

        return await asyncio.to_thread(self.run, address, command, *args, **options)

    def stream(
        self,
        address: Optional[str],
        command: str,
        *args: str,
        params: Params = None,
        server_id: Optional[str] = None,
        stdin: Stdin = None,
    ) -> Stream:
        """As :meth:`run`, with the output given as it arrives."""
        with _Stdin(stdin) as s:
            return Stream(
                _call(
                    self._native.stream, address, command, list(args), _params(params), server_id,
                    s.data, s.path, s.offset, None,
                )
            )

    def fanout(
        self,
        selector: Union[str, Sequence[str]],
        command: str,
        *args: str,
        params: Params = None,
        stdin: Stdin = None,
        parallel: int = 32,
        batch: Optional[int] = None,
        canary: Optional[int] = None,
        max_failures: Union[int, str, None] = None,
        deadline: Optional[float] = None,
        per_server: float = 60.0,
    ) -> FanOut:
        """Runs the command on every server the selector picks (as ``--on``; a list
        means every selector must match), ``parallel`` at once, in batches, stopping as
        ``canary`` and ``max_failures`` (``3`` or ``"10%"``) say."""
        selectors = [selector] if isinstance(selector, str) else list(selector)
        failures = None if max_failures is None else str(max_failures)
        with _Stdin(stdin) as s:
            return FanOut(
                _call(
                    self._native.fanout,
                    selectors, command, list(args), _params(params), s.data, s.path, s.offset,
                    parallel, batch, canary, failures, deadline, per_server, None,
                )
            )

    # Jobs, as `cmdchan job …` has them.

    def job_status(self, address: Optional[str], *ids: str, server_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """The jobs' states (``running``, ``exited``, ``signalled``, ``timed_out``,
        ``lost``, ``expired``, ``unknown``)."""
        return self.run(address, "job.status", *ids, server_id=server_id).jobs

    def job_wait(self, address: Optional[str], job: str, *, server_id: Optional[str] = None) -> Dict[str, Any]:
        """Waits for the job to end; how it ended."""
        return self.run(address, "job.wait", job, server_id=server_id).jobs[0]

    def job_output(self, address: Optional[str], job: str, offset: int = 0, *, server_id: Optional[str] = None) -> Result:
        """The job's kept output from byte ``offset``, and its state (``.jobs``)."""
        return self.run(address, "job.output", job, str(offset), server_id=server_id)

    def job_list(self, address: Optional[str], *, server_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """This client's recent jobs on the server, newest first."""
        return self.run(address, "job.list", server_id=server_id).jobs

    # Approvals, as `cmdchan --approval FILE` runs them.

    def run_approved(
        self, approval: Union[str, "os.PathLike[str]"], address: Optional[str] = None, *, server_id: Optional[str] = None, stdin: Stdin = None
    ) -> Result:
        """Runs the request approved in the file on one server (by default the one it
        names, if it names one)."""
        with _Stdin(stdin) as s:
            return _result(
                _call(
                    self._native.run, address, "", [], [], server_id, s.data, s.path, s.offset,
                    False, os.fspath(approval),
                )
            )

    def fanout_approved(self, approval: Union[str, "os.PathLike[str]"], selector: Union[str, Sequence[str]], **options: Any) -> FanOut:
        """Runs the request approved in the file on every server the selector picks."""
        selectors = [selector] if isinstance(selector, str) else list(selector)
        return FanOut(
            _call(
                self._native.fanout,
                selectors, "", [], [], None, None, None,
                options.get("parallel", 32), options.get("batch"), options.get("canary"),
                None if options.get("max_failures") is None else str(options["max_failures"]),
                options.get("deadline"), options.get("per_server", 60.0), os.fspath(approval),
            )
        )


def approval_request(
    credential: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    servers: Sequence[str],
    command: str,
    *args: str,
    params: Params = None,
    zone: Optional[str] = None,
    detach: bool = False,
    expires_in: float = 4 * 3600.0,
) -> str:
    """Prepares ``command`` on ``servers`` for approval, written to ``out`` (mode 0600);
    no server is contacted. Returns the request in plain words."""
    return _call(
        _native.approval_request,
        os.fspath(credential), os.fspath(out), command, list(args), _params(params), list(servers), zone, detach, expires_in,
    )


def approval_sign(credential: Union[str, "os.PathLike[str]"], path: Union[str, "os.PathLike[str]"]) -> str:
    """Co-signs the request in ``path`` with this (the approver's) credential."""
    return _call(_native.approval_sign, os.fspath(credential), os.fspath(path))


def approval_show(path: Union[str, "os.PathLike[str]"]) -> str:
    """The request in ``path`` and who approved it, in plain words."""
    return _call(_native.approval_show, os.fspath(path))


def job_id(run: str, server: str) -> str:
    """The ID of a fan-out run's job on one server."""
    return _call(_native.job_id, run, server)
