#!/usr/bin/env python3
"""Knock's local sandbox: a real Synapse on 127.0.0.1 with a bot, a demo user and a
knock-enabled room (version 10), and the worker in `wrangler dev` pointed at it.

`scripts/run` starts this when no homeserver is configured in .dev.vars. State lives in
.sandbox/ (homeserver database, users, room) and .wrangler/state (the worker's), so a second
run finds the same room and users. Ctrl-C stops everything it started.

Standard library only: it runs on the Python inside target/synapse-venv.
"""

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / ".sandbox"
HS_PORT = int(os.environ.get("KNOCK_SANDBOX_HS_PORT", "8008"))
PORT = int(os.environ.get("KNOCK_PORT", "8787"))
VENV = Path(os.environ.get("KNOCK_SYNAPSE_VENV", ROOT / "target" / "synapse-venv"))
HS_URL = f"http://127.0.0.1:{HS_PORT}"
KNOCK_URL = f"http://127.0.0.1:{PORT}"
BOLD, RESET = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")

children = []


def say(msg):
    print(f"{BOLD}==> {msg}{RESET}", flush=True)


def http(method, url, body=None, token=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def wait_for(url, what, seconds=90):
    start = time.time()
    while time.time() - start < seconds:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        for p in children:
            if p.poll() is not None:
                sys.exit(f"{what} stopped while starting (exit {p.returncode}); see .sandbox/*.log")
        time.sleep(0.1)
    sys.exit(f"{what} did not start within {seconds} s; see .sandbox/*.log")


def homeserver_config(state):
    return f"""# Knock sandbox homeserver (generated; delete .sandbox/ to start over)
server_name: localhost
pid_file: {SANDBOX}/homeserver.pid
public_baseurl: {HS_URL}/
listeners:
  - port: {HS_PORT}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {SANDBOX}/homeserver.db
log_config: {SANDBOX}/log.yaml
media_store_path: {SANDBOX}/media
signing_key_path: {SANDBOX}/signing.key
registration_shared_secret: {state['shared_secret']}
enable_registration: false
report_stats: false
macaroon_secret_key: {state['macaroon_secret']}
form_secret: {state['form_secret']}
trusted_key_servers: []
federation_domain_whitelist: []
presence:
  enabled: false
default_room_version: '10'
"""


LOG_YAML = """version: 1
formatters:
  f:
    format: '%(asctime)s %(levelname)s %(name)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: f
    filename: {path}
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""


def register(state, username, password, admin):
    _, nonce = http("GET", f"{HS_URL}/_synapse/admin/v1/register")
    parts = (nonce["nonce"], username, password, "admin" if admin else "notadmin")
    mac = hmac.new(state["shared_secret"].encode(), "\x00".join(parts).encode(), hashlib.sha1)
    status, body = http(
        "POST",
        f"{HS_URL}/_synapse/admin/v1/register",
        {"nonce": nonce["nonce"], "username": username, "password": password,
         "admin": admin, "mac": mac.hexdigest()},
    )
    if status != 200:
        sys.exit(f"could not register {username}: {status} {body}")
    return body


def bootstrap(state):
    say("creating the sandbox bot, demo user and knock-enabled room")
    bot = register(state, "knockbot", state["bot_password"], True)
    state["bot_token"] = bot["access_token"]
    state["bot_user_id"] = bot["user_id"]
    # Synapse's default invite rate limits are tight; lift them for the bot.
    http("POST",
         f"{HS_URL}/_synapse/admin/v1/users/{urllib.parse.quote(bot['user_id'])}/override_ratelimit",
         {"messages_per_second": 0, "burst_count": 0}, token=state["bot_token"])
    demo = register(state, "demo", state["demo_password"], False)
    state["demo_user_id"] = demo["user_id"]
    status, room = http("POST", f"{HS_URL}/_matrix/client/v3/createRoom", {
        "preset": "private_chat",
        "room_version": "10",
        "name": "Knock sandbox room",
        "topic": "A private room that people join by knocking through Knock",
        "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                           "content": {"join_rule": "knock"}}],
    }, token=state["bot_token"])
    if status != 200:
        sys.exit(f"could not create the sandbox room: {status} {room}")
    state["room_id"] = room["room_id"]


def create_knock_room(state, name, extra=None):
    body = {
        "preset": "private_chat",
        "room_version": "10",
        "name": name,
        "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                           "content": {"join_rule": "knock"}}] + (extra or []),
    }
    return http("POST", f"{HS_URL}/_matrix/client/v3/createRoom", body, token=state["bot_token"])


def bootstrap_space(state):
    """A small space with two rooms: the sandbox room and a second one."""
    say("creating the sandbox space with two rooms")
    status, second = create_knock_room(state, "Knock sandbox room 2")
    if status != 200:
        sys.exit(f"could not create the second sandbox room: {status} {second}")
    state["second_room_id"] = second["room_id"]
    children = [{"type": "m.space.child", "state_key": r, "content": {"via": ["localhost"]}}
                for r in (state["room_id"], state["second_room_id"])]
    body = {
        "preset": "private_chat",
        "room_version": "10",
        "name": "Knock sandbox space",
        "creation_content": {"type": "m.space"},
        "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                           "content": {"join_rule": "knock"}}] + children,
    }
    status, space = http("POST", f"{HS_URL}/_matrix/client/v3/createRoom", body,
                         token=state["bot_token"])
    if status != 200:
        sys.exit(f"could not create the sandbox space: {status} {space}")
    state["space_id"] = space["room_id"]


def stop_children(*_):
    for p in children:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGINT if p is children[-1] else signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in children:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    SANDBOX.mkdir(exist_ok=True)
    (SANDBOX / "media").mkdir(exist_ok=True)
    state_file = SANDBOX / "sandbox.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    for key in ("shared_secret", "macaroon_secret", "form_secret", "bot_password", "demo_password"):
        state.setdefault(key, secrets.token_urlsafe(18 if "password" in key else 32))
    (SANDBOX / "log.yaml").write_text(LOG_YAML.format(path=SANDBOX / "homeserver.log"))
    config = SANDBOX / "homeserver.yaml"
    config.write_text(homeserver_config(state))
    state_file.write_text(json.dumps(state, indent=2))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        say(f"starting the sandbox homeserver (Synapse) on {HS_URL}")
        hs_log = open(SANDBOX / "homeserver.out.log", "a")
        children.append(subprocess.Popen(
            [str(VENV / "bin" / "python"), "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=SANDBOX, stdout=hs_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(f"{HS_URL}/_matrix/client/versions", "the sandbox homeserver")

        known = "bot_token" in state and http(
            "GET", f"{HS_URL}/_matrix/client/v3/account/whoami", token=state["bot_token"])[0] == 200
        if not known:
            bootstrap(state)
            state_file.write_text(json.dumps(state, indent=2))
        if "space_id" not in state:
            bootstrap_space(state)
            state_file.write_text(json.dumps(state, indent=2))

        if "admin_key" not in state:
            # The admin API's key, which also signs in to the moderator page (/admin/).
            state["admin_key"] = secrets.token_urlsafe(24)
            state_file.write_text(json.dumps(state, indent=2))

        say(f"starting Knock on {KNOCK_URL} against the sandbox")
        env = dict(os.environ, KNOCK_PREBUILT="1", WRANGLER_SEND_METRICS="false",
                   WRANGLER_SEND_ERROR_REPORTS="false", CLOUDFLARE_CF_FETCH_ENABLED="false")
        sandbox_vars = {
            "NEW_ROOM_ID": state["room_id"],
            "MATRIX_BASE_URL": HS_URL,
            "MATRIX_ACCESS_TOKEN": state["bot_token"],
            "REQUEST_DELAY": "0",
            "SANDBOX": "1",
            "API_KEY": state["admin_key"],
            # Two forms: the default one (/invite_from_form) into the sandbox room, and
            # /invite_from_form/space into the space and both of its rooms.
            "KNOCK_ROOMS": json.dumps({
                "hub": {"room_id": state["space_id"], "space": True,
                        "rooms": [state["room_id"], state["second_room_id"]]},
            }),
            "KNOCK_FORMS": json.dumps({"space": {"room": "hub"}}),
        }
        cmd = [str(ROOT / "node_modules/.bin/node"), str(ROOT / "node_modules/wrangler/bin/wrangler.js"),
               "dev", "--local", "--ip", "127.0.0.1", "--port", str(PORT),
               "--persist-to", str(ROOT / ".wrangler/state"), "--test-scheduled",
               "--show-interactive-dev-session=false"]
        for k, v in sandbox_vars.items():
            cmd += ["--var", f"{k}:{v}"]
        worker_log = open(SANDBOX / "worker.log", "a")
        children.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=worker_log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(f"{KNOCK_URL}/", "Knock (wrangler dev)")

        sample = json.dumps({
            "eventId": "sandbox-sample-1", "eventType": "FORM_RESPONSE",
            "data": {"responseId": "sample", "fields": [
                {"key": "question_name", "label": "Your name", "type": "INPUT_TEXT", "value": "Demo"},
                {"key": "question_mxid", "label": "Your Matrix ID", "type": "INPUT_TEXT",
                 "value": state["demo_user_id"]}]}})
        print(f"""
{BOLD}Knock is running against a local sandbox homeserver.{RESET}

  Webhook URLs (point a form platform here):
    {KNOCK_URL}/invite_from_form          the sandbox room
    {KNOCK_URL}/invite_from_form/space    the sandbox space and both of its rooms

  Send a sample Tally-shaped knock for the demo user:
    curl -sS -X POST {KNOCK_URL}/invite_from_form -H 'Content-Type: application/json' \\
      -d '{sample}'

  Or knock through a plain HTML form in your browser:
    {KNOCK_URL}/form

  Watch the invite arrive in a Matrix client (Element, Cinny, ...):
    homeserver  {HS_URL}
    user        demo   (full ID {state['demo_user_id']})
    password    {state['demo_password']}

  Moderator page (held knocks, recent knocks, block-list, invites, health):
    {KNOCK_URL}/admin/    admin key {state['admin_key']}

  Health: {KNOCK_URL}/   Worker log: .sandbox/worker.log   Homeserver log: .sandbox/homeserver.log
  The sandbox keeps its room and users in .sandbox/ (delete it to start over).

Press Ctrl-C to stop.
""", flush=True)
        while all(p.poll() is None for p in children):
            time.sleep(0.5)
        dead = [p for p in children if p.poll() is not None]
        print(f"a sandbox process exited (code {dead[0].returncode}); stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the sandbox ...", flush=True)
        return 0
    finally:
        stop_children()


if __name__ == "__main__":
    sys.exit(main())
