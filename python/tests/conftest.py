"""Real servers for the Python package's tests: the cmdchan-server binary of this
checkout (target/debug, or $CMDCHAN_BIN), a root key, a zone key and credentials made
with its admin tool, over loopback. Nothing is mocked."""

import os
import pathlib
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("CMDCHAN_BIN", ROOT / "target" / "debug"))

POLICY = """
[roles.ops]
commands = ["hello", "slow", "count", "cat", "backup", "restart", "whoami", "quiet"]
[roles.lead]
commands = ["ping"]
[commands.hello]
program = "{dir}/hello.sh"
[commands.slow]
program = "{dir}/slow.sh"
[commands.count]
program = "{dir}/count.sh"
[commands.quiet]
program = "{dir}/quiet.sh"
[commands.cat]
program = "/bin/cat"
stdin = true
[commands.backup]
program = "{dir}/backup.sh"
detach = true
[commands.restart]
program = "{dir}/count.sh"
approvals = 1
approvers = ["lead"]
"""

SCRIPTS = {
    "hello.sh": 'echo hello; echo "to stderr" >&2; exit 3',
    "slow.sh": "for i in 1 2 3; do echo $i; sleep 0.4; done",
    "count.sh": 'echo x >> "$(dirname "$0")/runs"; echo counted',
    "backup.sh": "sleep 0.5; echo backed up",
    "quiet.sh": 'sleep 2; echo done >> "$(dirname "$0")/quiet-ran"',
}


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run cargo build --workspace first")
    return str(path)


def admin(*args: str) -> None:
    subprocess.run([binary("cmdchan-server"), "admin", *args], check=True, capture_output=True)


class Server:
    """A cmdchan-server on 127.0.0.1, a port of its own choosing."""

    def __init__(self, env: "Env", name: str, policy: pathlib.Path):
        self.name = name
        self.log: list = []
        self.proc = subprocess.Popen(
            [
                binary("cmdchan-server"), "serve", "--zone-key", str(env.zone_key),
                "--listen", "127.0.0.1:0", "--server-id", name, "--policy", str(policy),
                "--replay-store", f"file:{env.dir / ('replay-' + name)}",
                "--job-store", str(env.dir / ("jobs-" + name)),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "info"},
        )
        found = threading.Event()

        def read() -> None:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                self.log.append(line)
                if "listening on " in line and not found.is_set():
                    self.address = line.split("listening on ")[1].split()[0]
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(20):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Env:
    def __init__(self, dir: pathlib.Path):
        self.dir = dir
        self.root = dir / "root.key"
        self.zone_key = dir / "zone.key"
        admin("init", "--root", str(self.root))
        admin("zone-key", "--root", str(self.root), "--zone", "test", "--out", str(self.zone_key))
        for name, body in SCRIPTS.items():
            script = dir / name
            script.write_text("#!/bin/sh\n" + body + "\n")
            script.chmod(0o755)
        self.policy = dir / "policy.toml"
        self.policy.write_text(POLICY.replace("{dir}", str(dir)))
        self.servers: list = []

    def cred(self, name: str, role: str) -> pathlib.Path:
        out = self.dir / f"{name}.cred"
        admin("provision", "--root", str(self.root), "--name", name, "--role", role,
              "--zone", "test", "--out", str(out))
        return out

    def server(self, name: str, policy: pathlib.Path = None) -> Server:
        server = Server(self, name, policy or self.policy)
        self.servers.append(server)
        return server

    def runs(self) -> int:
        path = self.dir / "runs"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def inventory(self, servers: dict) -> pathlib.Path:
        out = self.dir / "inventory.toml"
        out.write_text("".join(f'[servers.{n}]\naddress = "{a}"\n' for n, a in servers.items()))
        return out


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    for server in e.servers:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CuttingProxy:
    """Relays TCP to a server; the first connection is cut at the server's first TLS
    application-data record (its answer), as a network that drops at the worst time."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.first = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            cut, self.first = self.first, False
            threading.Thread(target=self.up, args=(client, server), daemon=True).start()
            threading.Thread(target=self.down, args=(server, client, cut), daemon=True).start()

    @staticmethod
    def up(client, server) -> None:
        try:
            while data := client.recv(65536):
                server.sendall(data)
        except OSError:
            pass

    @staticmethod
    def down(server, client, cut: bool) -> None:
        def exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                more = server.recv(n - len(data))
                if not more:
                    raise OSError("closed")
                data += more
            return data

        try:
            while True:
                header = exact(5)
                if cut and header[0] == 0x17:
                    break
                client.sendall(header + exact(int.from_bytes(header[3:5], "big")))
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
