"""The Python package against real servers: a run, streamed output, stdin, a refusal
with its code, a retry that does not run twice, a fan-out with a stopped and a refusing
server, a job, an approval; results equal to what `cmdchan --json` prints."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import cmdchan
from conftest import CuttingProxy, binary, free_port


def cli_json(cred, address, server_id, *args):
    out = subprocess.run(
        [binary("cmdchan"), "--cred", str(cred), "--json", "--server", address, "--server-id", server_id, *args],
        capture_output=True,
    )
    return json.loads(out.stdout)


def without_durations(obj):
    if isinstance(obj, dict):
        return {k: without_durations(v) for k, v in obj.items() if k != "duration_ms"}
    return obj


def test_a_run_gives_the_exit_and_output_and_the_same_object_as_the_cli(env):
    server = env.server("s1")
    alice = env.cred("alice", "ops")
    client = cmdchan.Client(alice)
    result = client.run(server.address, "hello", server_id="s1")
    assert result.exit == 3 and not result.ok
    assert result.stdout == b"hello\n" and result.stderr == b"to stderr\n"
    assert result.program["code"] == 3
    cli = cli_json(alice, server.address, "s1", "hello")
    assert without_durations(result.json()) == without_durations(cli)
    assert client.run(server.address, "whoami", server_id="s1").reply["name"] == "alice"


def test_streamed_output_arrives_before_the_program_ends(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    began = time.monotonic()
    stream = client.stream(server.address, "slow", server_id="s1")
    seen = [(data, time.monotonic() - began) for name, data in stream if name == "stdout"]
    assert b"".join(d for d, _ in seen) == b"1\n2\n3\n"
    assert seen[0][1] < 0.7, f"the first line came at {seen[0][1]:.2f}s, not as it was printed"
    assert stream.result.exit == 0


def test_stdin_from_bytes_and_from_a_pipe(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    assert client.run(server.address, "cat", server_id="s1", stdin=b"from bytes\n").stdout == b"from bytes\n"
    read, write = os.pipe()
    with os.fdopen(write, "wb") as w:
        w.write(b"from a pipe\n" * 1000)
    with os.fdopen(read, "rb") as r:
        result = client.run(server.address, "cat", server_id="s1", stdin=r)
    assert result.stdout == b"from a pipe\n" * 1000


def test_a_file_object_is_sent_from_where_it_was_read_to(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    path = env.dir / "input.txt"
    path.write_bytes(b"first\nsecond\nthird\n")
    with open(path, "rb") as fh:
        fh.readline()
        result = client.run(server.address, "cat", server_id="s1", stdin=fh)
    assert result.stdout == b"second\nthird\n"


def test_a_stream_dropped_before_its_end_stops_a_quiet_program(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    stream = client.stream(server.address, "quiet", server_id="s1")
    time.sleep(0.5)
    del stream
    time.sleep(2.5)
    assert not (env.dir / "quiet-ran").exists(), "the program was stopped with its connection"


def test_a_refusal_is_an_exception_with_the_cli_code_and_exit(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    with pytest.raises(cmdchan.Refused) as refused:
        client.run(server.address, "ping", server_id="s1")
    assert (refused.value.code, refused.value.number, refused.value.exit) == ("forbidden", 21, 80)
    assert refused.value.json()["ok"] is False
    with pytest.raises(cmdchan.Unreachable) as down:
        client.run(f"127.0.0.1:{free_port()}", "hello", server_id="s1")
    assert (down.value.code, down.value.exit) == ("cannot connect", 69)
    with pytest.raises(cmdchan.UsageError):
        client.run(server.address, "hello", server_id="not an id")


def test_a_retry_through_a_cut_connection_does_not_run_twice(env):
    server = env.server("s1")
    proxy = CuttingProxy(server.address)
    client = cmdchan.Client(env.cred("alice", "ops"))
    result = client.run(proxy.address, "count", server_id="s1")
    assert result.stdout == b"counted\n"
    assert env.runs() == 1, "the command ran once"
    assert any("retried" in line for line in server.log), "the answer came from the store"


def test_a_fan_out_reports_each_server_and_a_summary(env):
    policy = env.dir / "refusing.toml"
    policy.write_text('[roles.ops]\ncommands = ["whoami"]\n')
    ok1, ok2, refusing = env.server("ok1"), env.server("ok2"), env.server("refusing", policy)
    inventory = env.inventory({
        "ok1": ok1.address, "ok2": ok2.address, "refusing": refusing.address,
        "stopped": f"127.0.0.1:{free_port()}",
    })
    client = cmdchan.Client(env.cred("alice", "ops"), inventory=[str(inventory)], retries=0)
    fan = client.fanout("*", "count")
    servers = {s.name: s for s in fan}
    assert set(servers) == {"ok1", "ok2", "refusing", "stopped"}
    assert servers["ok1"].ok and servers["ok1"].stdout == b"counted\n"
    assert isinstance(servers["refusing"].error, cmdchan.Refused)
    assert servers["refusing"].error.code == "unknown command"
    assert isinstance(servers["stopped"].error, cmdchan.Unreachable)
    assert fan.summary["succeeded"] == ["ok1", "ok2"]
    assert fan.summary["failed"] == ["refusing", "stopped"]
    assert env.runs() == 2

    async def gather():
        return [s.name async for s in client.fanout(["ok*"], "count")]

    assert sorted(asyncio.run(gather())) == ["ok1", "ok2"]


def test_a_detached_job_is_followed_by_id(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    started = client.run(server.address, "backup", server_id="s1", detach=True)
    job = started.job_id
    assert job and len(job) == 32
    assert client.job_status(server.address, job, server_id="s1")[0]["state"] in ("running", "exited")
    ended = client.job_wait(server.address, job, server_id="s1")
    assert (ended["state"], ended["code"]) == ("exited", 0)
    assert client.job_output(server.address, job, server_id="s1").stdout == b"backed up\n"
    assert job in [j["id"] for j in client.job_list(server.address, server_id="s1")]


def test_an_approved_request_runs_once_and_an_unapproved_one_is_refused(env):
    server = env.server("s1")
    inventory = env.inventory({"s1": server.address})
    alice, bob = env.cred("alice", "ops"), env.cred("bob", "lead")
    client = cmdchan.Client(alice, inventory=[str(inventory)])
    with pytest.raises(cmdchan.Refused) as refused:
        client.run("s1", "restart")
    assert refused.value.code == "approval required"
    path = env.dir / "restart.toml"
    said = cmdchan.approval_request(alice, path, ["s1"], "restart")
    assert "alice asks to run" in said
    with pytest.raises(cmdchan.UsageError):
        cmdchan.approval_sign(alice, path)
    assert "(not checked here; every server checks them): bob (role lead)" in cmdchan.approval_sign(bob, path)
    assert client.run_approved(path).stdout == b"counted\n"
    assert env.runs() == 1
    # Within the same second it is the same request: a retry, answered from the store.
    assert client.run_approved(path).stdout == b"counted\n"
    time.sleep(1.1)
    with pytest.raises(cmdchan.Refused) as again:
        client.run_approved(path)
    assert again.value.code == "reused id"
    assert env.runs() == 1, "an approval is single-use"


def test_the_gil_is_released_while_a_call_waits(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.01)

    counter = threading.Thread(target=count)
    counter.start()
    client.run(server.address, "slow", server_id="s1")
    done.set()
    counter.join()
    assert ticks > 50, f"another thread ran only {ticks} times during a 1.2 s call"


def test_the_example_rollout_runs_as_written(env):
    ok1, ok2 = env.server("ok1"), env.server("ok2")
    inventory = env.inventory({"ok1": ok1.address, "ok2": ok2.address})
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "rollout.py")
    out = subprocess.run(
        [sys.executable, example, "--cred", str(env.cred("alice", "ops")), "--inventory", str(inventory), "*", "count"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines())[0].startswith("ok1: ok")
    assert env.runs() == 2


def test_a_child_forked_after_a_call_is_told_instead_of_hanging(env):
    server = env.server("s1")
    client = cmdchan.Client(env.cred("alice", "ops"))
    assert client.run(server.address, "whoami", server_id="s1").ok
    pid = os.fork()
    if pid == 0:
        try:
            client.run(server.address, "whoami", server_id="s1")
        except RuntimeError as e:
            os._exit(0 if "forked" in str(e) else 2)
        except BaseException:
            os._exit(3)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
