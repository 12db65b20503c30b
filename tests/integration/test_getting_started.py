"""docs/getting-started.md, replayed offline with our klee against a real kleened.

The guide's todo app (Node.js) is played by a shell web server: busybox `httpd` serving a page
and a CGI script that keeps the items in a file (the guide's SQLite file, `/etc/todos/todo.db`)
or, when `MYSQL_HOST` is set, forwards them to a second container by name (the guide's MySQL).
The base image comes from the busybox tarball (`fetch file://...`) instead of `fetch-auto`.
Images and networks get a random suffix, so the guide can run beside other tests; everything else
follows the guide's steps in order, one test per part.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.rootfs import file_url, session_tarball

SUFFIX = secrets.token_hex(2)
EMPTY = "No items yet! Add one above!"
EMPTY_UPDATED = "You have no todo items yet! Add one above!"

START = "#!/bin/sh\n# Listens on port 3000\nexec httpd -f -p 3000 -h /app/src/static\n"
INDEX = f"<html><body><h1>Todo App</h1><p>{EMPTY}</p></body></html>\n"
ITEMS_CGI = """\
#!/bin/sh
# GET: the items, one per line. POST: add the request body as an item.
echo "Content-Type: text/plain"
echo ""
if [ -n "$MYSQL_HOST" ]; then
    url="http://$MYSQL_HOST:3306/cgi-bin/items"
    if [ "$REQUEST_METHOD" = POST ]; then
        wget -q -O - --post-data "$(head -c "$CONTENT_LENGTH")" "$url"
    else
        wget -q -O - "$url"
    fi
    exit
fi
db="${SQLITE_DB_LOCATION:-/etc/todos/todo.db}"
mkdir -p "$(dirname "$db")"
if [ "$REQUEST_METHOD" = POST ]; then
    head -c "$CONTENT_LENGTH" >> "$db"
    echo >> "$db"
fi
cat "$db" 2>/dev/null
"""
DB_START = "#!/bin/sh\nmkdir -p /var/lib/mysql\nexec httpd -f -p 3306 -h /db/www\n"
DB_CGI = ITEMS_CGI.replace('${SQLITE_DB_LOCATION:-/etc/todos/todo.db}', "/var/lib/mysql/todos")


@dataclass
class Guide:
    daemon: Daemon
    app: Path
    base: str = ""
    network: str = ""
    prefix: str = ""  # the network's first three octets
    containers: list[str] = field(default_factory=list)

    def klee(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
        result = subprocess.run([sys.executable, "-m", "klee", "--host", self.daemon.host, *args], capture_output=True,
                                text=True, env=environ, timeout=timeout, cwd=self.app, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def run_detached(self, *args: str) -> str:
        """`klee run -d ...`: the container's id (first line), checking the second."""
        result = self.klee("run", *args)
        lines = result.stdout.splitlines()
        assert result.stderr.startswith("created execution instance "), result.stderr
        self.containers.append(lines[0])
        return lines[0]

    def address(self, container: str) -> str:
        endpoints = json.loads(self.klee("isc", container).stdout)["container_endpoints"]
        return endpoints[0]["ip_address"]

    def build(self, tag: str, *extra: str) -> str:
        lines = self.klee("build", "-t", tag, *extra, ".").stdout.splitlines()
        assert lines[0].startswith("Started to build image with ID ") and lines[-2] == "image created", lines
        return lines[-1]


def http(url: str, data: str | None = None, timeout: float = 15) -> str:
    """GET (or POST `data`) without any proxy, retrying while the server starts."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, data=None if data is None else data.encode())
            with opener.open(request, timeout=5) as response:
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def write_app(app: Path) -> None:
    """The app's sources, as `git clone` would leave them (the Dockerfiles come with each part)."""
    for rel, text, mode in [
        ("start.sh", START, 0o755),
        ("src/static/index.html", INDEX, 0o644),
        ("src/static/cgi-bin/items", ITEMS_CGI, 0o755),
        ("db/start.sh", DB_START, 0o755),
        ("db/www/cgi-bin/items", DB_CGI, 0o755),
    ]:
        path = app / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


@pytest.fixture(scope="module")
def guide(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory):
    app = tmp_path_factory.mktemp("getting-started") / "app"
    app.mkdir()
    write_app(app)
    g = Guide(daemon=daemon, app=app)
    yield g
    for container in g.containers:
        g.klee("rmc", "-f", container, check=False)
    if g.network:
        g.klee("rmn", g.network, check=False)


# --- part 2: containerize the app -------------------------------------------------------------------------------


def test_part2_base_image_network_build_run(guide):
    g = guide
    # `klee image create fetch-auto` on a real host; offline, the busybox tarball.
    g.base = f"base{SUFFIX}"
    out = g.klee("image", "create", "-t", g.base, "fetch", file_url(session_tarball(g.daemon.workdir))).stdout
    assert out.splitlines()[-2] == "image created"
    g.prefix = f"10.{137 + int(SUFFIX[:2], 16) % 100}.{int(SUFFIX[2:], 16)}"
    g.network = f"testnet{SUFFIX}"
    network_id = g.klee("network", "create", "--subnet", f"{g.prefix}.0/24", g.network).stdout.strip()
    assert len(network_id) == 12
    (g.app / "Dockerfile").write_text(f"FROM {g.base}\nWORKDIR /app\nCOPY . .\n# Listens on port 3000\n"
                                      "CMD /app/start.sh\n")  # fmt: skip
    g.build(f"webapp{SUFFIX}")
    cid = g.run_detached("-n", g.network, "-d", f"webapp{SUFFIX}")
    assert cid in g.klee("lsc", "-q").stdout.split()
    assert g.address(cid) == f"{g.prefix}.1"  # the first container on a network gets .1
    assert EMPTY in http(f"http://{g.prefix}.1:3000/")
    http(f"http://{g.prefix}.1:3000/cgi-bin/items", data="Learn Kleene")
    assert http(f"http://{g.prefix}.1:3000/cgi-bin/items") == "Learn Kleene\n"


# --- part 3: update the app ----------------------------------------------------------------------------------


def test_part3_update_rebuild_and_replace(guide):
    g = guide
    index = g.app / "src/static/index.html"
    index.write_text(index.read_text().replace(EMPTY, EMPTY_UPDATED))
    g.build(f"webapp{SUFFIX}")
    second = g.run_detached("-n", g.network, "-d", f"webapp{SUFFIX}")
    assert g.address(second) == f"{g.prefix}.2"
    assert EMPTY_UPDATED in http(f"http://{g.prefix}.2:3000/")
    assert EMPTY in http(f"http://{g.prefix}.1:3000/")  # the old container still runs the old code
    running = g.klee("lsc", "-q").stdout.split()
    for container in list(g.containers):
        assert container in running
        assert g.klee("rmc", "-f", container).stdout.split() == [container]  # stop + remove in one step
        g.containers.remove(container)
    third = g.run_detached("-n", g.network, "-d", f"webapp{SUFFIX}")
    assert g.address(third) == f"{g.prefix}.1"  # addresses are reused
    assert http(f"http://{g.prefix}.1:3000/cgi-bin/items") == ""  # the items went with the old container
    g.klee("rmc", "-f", third)
    g.containers.remove(third)


# --- part 4: persist the DB with a volume --------------------------------------------------------------------


def test_part4_volume_keeps_the_items(guide):
    g = guide
    volume = f"todo-db{SUFFIX}"
    assert g.klee("volume", "create", volume).stdout.split() == [volume]
    assert volume in g.klee("lsv", "-q").stdout.split()
    first = g.run_detached("-n", g.network, "-d", "--mount", f"{volume}:/etc/todos", f"webapp{SUFFIX}")
    http(f"http://{g.address(first)}:3000/cgi-bin/items", data="Persist me")
    g.klee("rmc", "-f", first)
    g.containers.remove(first)
    second = g.run_detached("-n", g.network, "-d", "--mount", f"{volume}:/etc/todos", f"webapp{SUFFIX}")
    assert http(f"http://{g.address(second)}:3000/cgi-bin/items") == "Persist me\n"
    g.klee("rmc", "-f", second)
    g.containers.remove(second)
    inspect = json.loads(g.klee("isv", volume).stdout)
    assert inspect["volume"]["name"] == volume and inspect["mountpoints"] == []
    assert g.klee("rmv", volume).stdout.split() == [volume]


# --- part 5: bind mounts for development ------------------------------------------------------------------------


def test_part5_bind_mounts(guide):
    g = guide
    # Files written in the container appear on the host, and the other way round.
    r = g.klee("run", "--rm", "--mount", f"{g.app.parent}:/mnt", g.base, "/bin/sh", "-c",
               "ls /mnt; touch /mnt/myfile.txt")  # fmt: skip
    assert "app" in r.stdout.splitlines() and (g.app.parent / "myfile.txt").exists()
    (g.app.parent / "myfile.txt").unlink()
    r = g.klee("run", "--rm", "--mount", f"{g.app.parent}:/mnt", g.base, "/bin/ls", "/mnt")
    assert "myfile.txt" not in r.stdout.split()

    (g.app / "Dockerfile.dev").write_text(f"FROM webapp{SUFFIX}:latest\nRUN rm -rf /app\nCMD /app/start.sh\n")
    g.build(f"webapp-dev{SUFFIX}", "-f", "Dockerfile.dev")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KLEE_")}
    # Ctrl+C reaches klee as from a terminal even when the tests run in a background job, which
    # starts with SIGINT ignored (an ignored signal stays ignored across exec; a handled one
    # starts as the default).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        attached = subprocess.Popen(
            [sys.executable, "-m", "klee", "--host", g.daemon.host, "run", "-n", g.network, "--mount",
             f"{g.app}:/app", f"webapp-dev{SUFFIX}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    cid = attached.stderr.readline().strip()  # klee's status lines are on stderr, the container id first
    g.containers.append(cid)
    try:
        url = f"http://{g.prefix}.1:3000/"
        assert EMPTY_UPDATED in http(url)
        index = g.app / "src/static/index.html"
        index.write_text(index.read_text().replace("Todo App", "Todo App (dev)"))
        assert "Todo App (dev)" in http(url)  # no rebuild: the container serves the host's files
    finally:
        attached.send_signal(signal.SIGINT)  # Ctrl+C
        attached.wait(timeout=60)
    assert attached.returncode == 130
    # Ctrl+C ends the attached process, which is the container's: it stops, as with docker
    # (upstream's guide says the container keeps running). It is kept until removed.
    assert cid not in g.klee("lsc", "-q").stdout.split()
    assert cid in g.klee("lsc", "-a", "-q").stdout.split()
    g.klee("rmc", "-f", cid)
    g.containers.remove(cid)


# --- part 6: multi-container app ---------------------------------------------------------------------------


def test_part6_two_containers_talk_by_name(guide):
    g = guide
    volume = f"myapp_db{SUFFIX}"
    g.klee("volume", "create", volume)
    (g.app / "Dockerfile.db").write_text(f"FROM {g.base}\nCOPY db /db\nCMD /db/start.sh\n")
    g.build(f"tododb{SUFFIX}", "-f", "Dockerfile.db")
    db_name = f"mysql{SUFFIX}"
    db = g.run_detached("-d", "--name", db_name, "-n", g.network, "--ip", f"{g.prefix}.10",
                        "-m", f"{volume}:/var/lib/mysql", f"tododb{SUFFIX}")  # fmt: skip
    assert g.address(db) == f"{g.prefix}.10"
    web = g.run_detached("-d", "-n", g.network, "-e", f"MYSQL_HOST={db_name}", "-e", "MYSQL_USER=webapp",
                         "-m", f"{g.app}:/app", f"webapp-dev{SUFFIX}")  # fmt: skip
    web_url = f"http://{g.address(web)}:3000/cgi-bin/items"
    http(web_url, data="Stored next door")
    assert http(web_url) == "Stored next door\n"
    # What `klee exec -it <db> mysql` shows in the guide: the data is in the database container.
    r = g.klee("exec", db_name, "/bin/cat", "/var/lib/mysql/todos")
    assert "Stored next door" in r.stdout.splitlines()
    for container in (web, db):
        g.klee("rmc", "-f", container)
        g.containers.remove(container)
    g.klee("rmv", volume)
