"""Type hints of the native module (see cmdchan/__init__.py for the documented API)."""

from typing import Any, Dict, List, Optional, Tuple, Union

PROTOCOL: str

class Native:
    def __init__(
        self,
        credential: str,
        zone: Optional[str] = ...,
        inventory: List[str] = ...,
        connect_timeout: float = ...,
        answer_timeout: float = ...,
        retries: int = ...,
        max_output: int = ...,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    def run(
        self,
        address: Optional[str],
        command: str,
        args: List[str],
        params: List[Tuple[str, str]],
        server_id: Optional[str] = ...,
        stdin: Optional[bytes] = ...,
        stdin_path: Optional[str] = ...,
        stdin_offset: Optional[int] = ...,
        detach: bool = ...,
        approval: Optional[str] = ...,
    ) -> Dict[str, Any]: ...
    def stream(
        self,
        address: Optional[str],
        command: str,
        args: List[str],
        params: List[Tuple[str, str]],
        server_id: Optional[str] = ...,
        stdin: Optional[bytes] = ...,
        stdin_path: Optional[str] = ...,
        stdin_offset: Optional[int] = ...,
        approval: Optional[str] = ...,
    ) -> Streamed: ...
    def fanout(
        self,
        selectors: List[str],
        command: str,
        args: List[str],
        params: List[Tuple[str, str]],
        stdin: Optional[bytes] = ...,
        stdin_path: Optional[str] = ...,
        stdin_offset: Optional[int] = ...,
        parallel: int = ...,
        batch: Optional[int] = ...,
        canary: Optional[int] = ...,
        max_failures: Optional[str] = ...,
        deadline: Optional[float] = ...,
        per_server: float = ...,
        approval: Optional[str] = ...,
    ) -> FanOut: ...

class Streamed:
    def next(self) -> Optional[Tuple[str, Union[bytes, Dict[str, Any]]]]: ...

class FanOut:
    def next(self) -> Optional[Dict[str, Any]]: ...

def approval_request(
    credential: str,
    out: str,
    command: str,
    args: List[str],
    params: List[Tuple[str, str]],
    servers: List[str],
    zone: Optional[str] = ...,
    detach: bool = ...,
    expires_in: float = ...,
) -> str: ...
def approval_sign(credential: str, path: str) -> str: ...
def approval_show(path: str) -> str: ...
def job_id(run: str, server: str) -> str: ...
