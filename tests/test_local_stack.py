"""The local stack itself, as a developer meets it.

- The control endpoints (`/_local/...`) answer on the control port only (`control_url`), never on the
  gateway's client ports, where API Gateway's answer for an unknown path comes back.
- The start banner's Python snippets run as pasted.
- A second stack, started here with its own folder and ports, refuses a taken port naming the port and
  its setting, reports a moto that exits at start, and takes moto with it when it is killed with SIGKILL.

The second stack is the binary local/lib.sh started ($GATEWAY_LOCAL_BIN), on ports apart from the main
stack's defaults (4080, 4443, 5055, 4091-4093, 4099).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from helpers import HTTP_TIMEOUT, REPO_ROOT, mail_to, state_path

# A prefix no reply queue has: a sweep that reaches the real sweeper by mistake deletes nothing.
NO_SUCH_REPLY_QUEUES = "llm-gateway-reply-no-such-queue-"
CONTROL_ENDPOINTS = [("GET", "/_local/metrics"), ("POST", "/_local/sweep-reply-queues")]

# The second stack's ports (GATEWAY_LOCAL_HOST stays 127.0.0.1).
SECOND_STACK_PORTS = {
    "GATEWAY_LOCAL_HTTP_PORT": 4180,
    "GATEWAY_LOCAL_HTTPS_PORT": 4543,
    "GATEWAY_LOCAL_MOTO_PORT": 5155,
    "GATEWAY_LOCAL_MOCK_AZURE_PORT": 4191,
    "GATEWAY_LOCAL_MOCK_BEDROCK_PORT": 4192,
    "GATEWAY_LOCAL_MOCK_GEMINI_PORT": 4193,
    "GATEWAY_LOCAL_CONTROL_PORT": 4199,
}
SECOND_MOTO_PORT = SECOND_STACK_PORTS["GATEWAY_LOCAL_MOTO_PORT"]
READY_WITHIN = 60  # seconds, as local/lib.sh waits
MOTO_GONE_WITHIN = 5  # seconds after the stack is killed


# --------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", CONTROL_ENDPOINTS)
def test_control_endpoints_are_not_on_the_gateway_ports(state, base_url, https_base_url, method, path):
    for base, verify in ((base_url, True), (https_base_url, state["ca_bundle"])):
        resp = requests.request(
            method,
            f"{base}{path}",
            params={"idle_secs": 0, "prefix": NO_SUCH_REPLY_QUEUES},
            verify=verify,
            timeout=HTTP_TIMEOUT,
        )
        # What API Gateway REST answers for a path no resource matches.
        assert resp.status_code == 403, (base, resp.status_code, resp.text)
        assert resp.json() == {"message": "Missing Authentication Token"}, (base, resp.text)
        assert resp.headers.get("x-amzn-ErrorType") == "MissingAuthenticationTokenException"


def test_control_endpoints_answer_on_the_control_port(state):
    control = state["control_url"].rstrip("/")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", control), "the control port is on loopback only"
    assert control not in (state["base_url"].rstrip("/"), state["https_base_url"].rstrip("/"))

    metrics = requests.get(f"{control}/_local/metrics", timeout=HTTP_TIMEOUT)
    assert metrics.status_code == 200, metrics.text
    assert isinstance(metrics.json()["sqs_calls"], int)

    swept = requests.post(
        f"{control}/_local/sweep-reply-queues",
        params={"idle_secs": 0, "prefix": NO_SUCH_REPLY_QUEUES},
        timeout=HTTP_TIMEOUT,
    )
    assert swept.status_code == 200, swept.text
    assert swept.json() == {"deleted": []}

    # ... and it is not a way into the gateway either.
    gateway_path = requests.post(
        f"{control}/azure-openai/openai/deployments/gpt-4o/chat/completions", json={}, timeout=HTTP_TIMEOUT
    )
    assert gateway_path.status_code == 404


# --------------------------------------------------------------------------
# The start banner
# --------------------------------------------------------------------------


def banner_snippets(log: str) -> tuple[str, dict[str, str]]:
    """The token and the Python snippets ({"Azure OpenAI (openai)": code, ...}) of the banner in `log`."""
    token = re.search(r"^export GATEWAY_TOKEN='([^']+)'$", log, re.M)
    assert token, "no token in the banner"
    assert "Each Python snippet below" in log and "Stop with Ctrl-C." in log, "no snippets in the banner"
    body = log.split("Each Python snippet below", 1)[1].split("Stop with Ctrl-C.", 1)[0]
    snippets = {}
    for block in body.split("\n\n")[1:]:
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("# "):
            snippets[lines[0][2:]] = "\n".join(lines) + "\n"
    return token.group(1), snippets


def test_banner_snippets_run_as_pasted(state):
    log_path = state_path().parent / "stack.log"
    if not log_path.is_file():
        pytest.skip(f"no {log_path}: the banner is read from the stack output local/lib.sh keeps there")
    token, snippets = banner_snippets(log_path.read_text(encoding="utf-8", errors="replace"))
    assert len(snippets) == 3, list(snippets)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "AWS_BEARER_TOKEN"))}
    env["GATEWAY_TOKEN"] = token
    for name, code in snippets.items():
        # As pasted into a fresh interpreter: nothing imported beforehand.
        run = subprocess.run(
            [sys.executable, "-I", "-"],
            input=code,
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert run.returncode == 0, f"{name}:\n{code}\n{run.stderr}"
        assert run.stdout.strip(), f"{name} printed nothing"


# --------------------------------------------------------------------------
# A second stack: taken ports, moto's early exit, SIGKILL
# --------------------------------------------------------------------------


def stack_binary() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/llm-gateway/target")
    for candidate in (os.environ.get("GATEWAY_LOCAL_BIN"), f"{target}/debug/gateway-local"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no gateway-local binary: set GATEWAY_LOCAL_BIN (local/lib.sh does)")


class SecondStack:
    """The stack binary in a folder of its own, on SECOND_STACK_PORTS, output in <folder>/stack.log."""

    def __init__(self, folder: Path, **settings: str):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "stack.log"
        self.state_file = folder / "stack.json"
        # Nothing from the main stack's environment: no AWS endpoint (that would skip moto), no settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AWS_ENDPOINT_URL"))}
        env.update({name: str(port) for name, port in SECOND_STACK_PORTS.items()})
        env["GATEWAY_LOCAL_DIR"] = str(folder)
        env["GATEWAY_LOCAL_PYTHON"] = sys.executable
        env.update(settings)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(stack_binary())], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_exit(self, within: float) -> int:
        try:
            return self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stack did not exit within {within} s:\n{self.output()}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while not self.state_file.exists():
            if self.process.poll() is not None:
                pytest.fail(f"the second stack exited ({self.process.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the second stack was not ready within {READY_WITHIN} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: exited, not reaped), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(") ", 1)[1][:1]


def running(pid: int) -> bool:
    return process_state(pid) not in (None, "Z")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def listening(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except requests.ConnectionError:
        return False
    except requests.RequestException:
        return True


class AnswersEverything(BaseHTTPRequestHandler):
    """Stands in for a stale moto: 200 to every GET, as moto's health probe expects."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def stale_server(request):
    """An HTTP server answering 200 on 127.0.0.1:<port> for the duration of a test."""
    servers = []

    def _start(port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), AnswersEverything)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("setting", sorted(SECOND_STACK_PORTS))
def test_a_taken_port_is_refused_naming_the_port_and_its_setting(tmp_path, stale_server, setting):
    port = SECOND_STACK_PORTS[setting]
    stale_server(port)
    stack = SecondStack(tmp_path / "stack")
    try:
        code = stack.wait_exit(within=30)
    finally:
        stack.stop()
    output = stack.output()
    assert code != 0, output
    assert (
        f"port {port} ({setting}) is already in use; stop whatever listens there or choose another port"
        in output
    ), output
    assert not stack.state_file.exists()
    if setting != "GATEWAY_LOCAL_MOTO_PORT":
        assert not listening(SECOND_MOTO_PORT), "the stack started moto before it refused the port"


def test_moto_exiting_at_start_is_reported_with_its_log(tmp_path):
    fake_moto = tmp_path / "moto_server"
    fake_moto.write_text("#!/bin/sh\necho 'OSError: [Errno 98] Address already in use' >&2\nexit 1\n")
    fake_moto.chmod(0o755)
    stack = SecondStack(tmp_path / "stack", GATEWAY_LOCAL_MOTO_BIN=str(fake_moto))
    try:
        code = stack.wait_exit(within=30)
    finally:
        stack.stop()
    output = stack.output()
    assert code != 0, output
    assert "moto exited before it answered" in output, output
    assert "OSError: [Errno 98] Address already in use" in output, output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's prctl")
def test_a_killed_stack_takes_moto_with_it(tmp_path):
    assert not listening(SECOND_MOTO_PORT), f"something already listens on {SECOND_MOTO_PORT}"
    stack = SecondStack(tmp_path / "stack")
    moto: list[int] = []
    try:
        stack.wait_ready()
        moto = [pid for pid in children_of(stack.process.pid) if running(pid)]
        assert len(moto) == 1, f"the stack has one child, moto: {moto}"
        assert listening(SECOND_MOTO_PORT)

        stack.process.send_signal(signal.SIGKILL)
        stack.process.wait(timeout=10)
        deadline = time.monotonic() + MOTO_GONE_WITHIN
        while (running(moto[0]) or listening(SECOND_MOTO_PORT)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(moto[0]), f"moto ({moto[0]}) outlived the killed stack by {MOTO_GONE_WITHIN} s"
        assert not listening(SECOND_MOTO_PORT), f"port {SECOND_MOTO_PORT} is still taken"
    finally:
        stack.stop()
        # Whatever happened, leave no moto behind (only the one this test started).
        for pid in moto:
            if running(pid) and "moto" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# The route function's time limit
# --------------------------------------------------------------------------


def test_a_stream_running_into_the_function_time_limit_is_ended_cleanly_and_audited(tmp_path):
    """A stream still running shortly before the route function's timeout is ended by the gateway in the
    provider's own framing (the SDK raises its usual streaming error, not a broken connection), and its
    final audit record says so: Lambda would otherwise kill it mid-frame with no final record."""
    import gzip
    import json

    import openai

    from helpers import aws_client, create_cognito_user

    stack = SecondStack(
        tmp_path / "stack",
        GATEWAY_TRANSPORT="direct",
        GATEWAY_LOCAL_FUNCTION_TIMEOUT_SECS="4",
        GATEWAY_STREAM_CUT_MARGIN_MS="1500",
    )
    try:
        stack.wait_ready()
        state = json.loads(stack.state_file.read_text())
        user = create_cognito_user(state, ["gateway-all"])
        client = openai.AzureOpenAI(
            azure_endpoint=f"{state['base_url']}/azure-openai", api_version="2024-10-21",
            api_key=user["access_token"], max_retries=0, timeout=HTTP_TIMEOUT,
        )
        # mock-slow sends a word every 300 ms: this reply would take far longer than 4 s.
        prompt = " ".join(f"word{i}" for i in range(60))
        started = time.monotonic()
        received = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in client.chat.completions.create(
                model="mock-slow", messages=[{"role": "user", "content": prompt}], stream=True
            ):
                received.extend(choice.delta.content or "" for choice in chunk.choices)
        elapsed = time.monotonic() - started
        assert "time limit" in str(raised.value), raised.value
        assert received, "the stream ran before it was ended"
        assert 2.0 <= elapsed < 4.0, f"ended {elapsed:.1f} s in: before the 4 s limit, after most of it"

        s3 = aws_client(state, "s3")
        bucket = state["buckets"]["audit"]
        finals = []
        deadline = time.monotonic() + 20
        while not finals and time.monotonic() < deadline:
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix="audit/").get("Contents", []):
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                for line in body.decode().splitlines():
                    event = json.loads(line)
                    if event.get("record") == "final" and event["operation"] == "chat.completions":
                        finals.append(event)
            time.sleep(0.5)
        assert [e["outcome"] for e in finals] == ["deadline_cut"], finals
        assert finals[0]["bytes_out"] > 0 and finals[0]["stream"] is True
    finally:
        stack.stop()


# --------------------------------------------------------------------------
# The state file's shape
# --------------------------------------------------------------------------


def test_the_state_file_has_exactly_its_typed_shape(state):
    """The running stack's state file is a StackState exactly (the same check load_state makes), and a
    key the type does not know, or a provider spelled another way, is refused."""
    import copy

    import stack_state

    stack_state.check(copy.deepcopy(state))
    extra = copy.deepcopy(state)
    extra["surprise"] = 1
    with pytest.raises(stack_state.StateShapeError, match="unknown keys"):
        stack_state.check(extra)
    respelled = copy.deepcopy(state)
    respelled["mocks"]["bedrock"] = respelled["mocks"].pop("bedrock-claude", "http://127.0.0.1:1")
    with pytest.raises(stack_state.StateShapeError, match="spelling"):
        stack_state.check(respelled)
    wrong_type = copy.deepcopy(state)
    wrong_type["upstream_response_timeout_ms"] = "6000"
    with pytest.raises(stack_state.StateShapeError, match="integer"):
        stack_state.check(wrong_type)


def test_the_first_administrator_comes_from_the_configuration(tmp_path):
    """`identity.bootstrapAdmin` makes a fresh stack administrable: the account exists in gateway-admins
    with its e-mail verified, and its invitation (the temporary password) went out by mail."""
    import json

    from helpers import aws_client

    config = json.loads((REPO_ROOT / "config" / "gateway.json").read_text(encoding="utf-8"))
    config["environments"]["dev"]["identity"]["bootstrapAdmin"] = {
        "username": "first-admin", "email": "first-admin@example.com"}
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    # A previous test's killed stack takes its moto down asynchronously: wait for the port.
    deadline = time.monotonic() + MOTO_GONE_WITHIN
    while listening(SECOND_MOTO_PORT) and time.monotonic() < deadline:
        time.sleep(0.1)
    stack = SecondStack(tmp_path / "stack", GATEWAY_LOCAL_CONFIG_FILE=str(path))
    try:
        stack.wait_ready()
        state = json.loads(stack.state_file.read_text(encoding="utf-8"))
        idp = aws_client(state, "cognito-idp")
        user = idp.admin_get_user(UserPoolId=state["user_pool_id"], Username="first-admin")
        attributes = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
        assert user["UserStatus"] == "FORCE_CHANGE_PASSWORD" and user["Enabled"]
        assert attributes["email"] == "first-admin@example.com" and attributes["email_verified"] == "true"
        groups = idp.admin_list_groups_for_user(UserPoolId=state["user_pool_id"], Username="first-admin")
        assert [g["GroupName"] for g in groups["Groups"]] == ["gateway-admins"]
        invitations = [m for m in mail_to(state, "first-admin@example.com")
                       if m["destinations"].get("ToAddresses") == ["first-admin@example.com"]]
        assert len(invitations) == 1 and "first-admin" in invitations[0]["body"]
    finally:
        stack.stop()
        deadline = time.monotonic() + MOTO_GONE_WITHIN
        while listening(SECOND_MOTO_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)
