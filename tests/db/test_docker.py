"""``--db docker`` for real: a PostGIS container through testcontainers on whichever Docker-compatible
engine answers (``scripts/test.sh`` brings up podman and the registry-free image where no Docker runs).

Verdicts equal the local cluster's item by item, the fixture stays intact, and no container of the
harness is left after a normal exit, Ctrl-C, SIGTERM or ``kill -9``. Skipped, saying why, only where
no engine answers or no PostGIS image is available to it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from harness.db.docker import DEFAULT_IMAGE, OWNER_LABEL, DockerServer, choose_image, docker_engine_error
from harness.db.image import LOCAL_TAG, RECIPE_LABEL
from harness.errors import ProvisionError
from tests.conftest import REPO

pytestmark = pytest.mark.docker

HANGZHOU = REPO / "fixtures" / "hangzhou"
PODMAN_SOCKET = "unix:///run/podman/podman.sock"  # where scripts/container-engine.sh starts it as root


@pytest.fixture(scope="module")
def engine():
    """The engine's DOCKER_HOST (set for the module): DOCKER_HOST if it answers, else podman's socket
    as scripts/container-engine.sh starts it."""
    saved = os.environ.get("DOCKER_HOST")
    why = docker_engine_error()
    if why and saved is None and Path(PODMAN_SOCKET[len("unix://"):]).exists():
        os.environ["DOCKER_HOST"] = PODMAN_SOCKET
        why = docker_engine_error()
    if why:
        _restore("DOCKER_HOST", saved)
        pytest.skip(f"{why}; bring one up with `eval \"$(bash scripts/container-engine.sh)\"`")
    import docker
    client = docker.from_env()
    try:
        choose_image(client, os.environ.get("TXT2SQL_DOCKER_IMAGE"))
    except ProvisionError as exc:
        _restore("DOCKER_HOST", saved)
        pytest.skip(f"no PostGIS image for the engine: {exc}")
    yield client
    client.close()
    _restore("DOCKER_HOST", saved)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def containers_of(client, owner: str) -> list[str]:
    """What ``podman ps -a`` / ``docker ps -a`` shows of one harness run's containers. A container removed
    while the list is read (the reaper at work) makes podman answer 500 "no such container": read again."""
    import docker.errors

    for _ in range(20):
        try:
            return [c.id for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})]
        except (docker.errors.NotFound, docker.errors.APIError):
            time.sleep(0.25)
    return [c.id for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})]


def _mixed_predictions(path: Path, split: str) -> None:
    """Replayed golds, every third replaced by a wrong answer and every seventh by an undefined column."""
    rows = [json.loads(line) for line in (HANGZHOU / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as fh:
        for n, row in enumerate(rows, start=1):
            gold = row["answer"][0] if isinstance(row["answer"], list) else row["answer"]
            output = "SELECT nosuchcolumn FROM rfgcpy" if n % 7 == 0 else "SELECT 1" if n % 3 == 0 else gold
            fh.write(json.dumps({"id": str(row.get("id", n)), "output": output}, ensure_ascii=False) + "\n")


def test_docker_verdicts_equal_local_item_by_item(engine, tmp_path):
    from harness.pipeline import EvalConfig, evaluate
    preds = tmp_path / "preds.jsonl"
    _mixed_predictions(preds, "dev")
    runs = {db: evaluate(EvalConfig(benchmark=HANGZHOU, split="dev", model=f"replay:{preds}", db=db,
                                    out=tmp_path / db, use_cache=False, progress=False))
            for db in ("local", "docker")}
    verdicts = {db: [(i.id, i.status, i.variants_matched, i.variants_total) for i in r.items]
                for db, r in runs.items()}
    assert len(verdicts["docker"]) == 53
    assert verdicts["docker"] == verdicts["local"]
    assert {v[1] for v in verdicts["docker"]} >= {"correct", "wrong_result", "exec_error"}
    assert all(r.summary.fixture_intact is True for r in runs.values())


def test_container_databases_are_utf8_with_postgis(engine):
    with DockerServer() as server, psycopg.connect(**server.admin.kwargs()) as conn:
        enc = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'")
        assert enc.fetchone() == ("UTF8",)
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        assert conn.execute("SELECT ST_AsText(ST_GeomFromText('POINT(120.1 30.2)'))").fetchone() == ("POINT(120.1 30.2)",)
        assert server.image in (DEFAULT_IMAGE, LOCAL_TAG, os.environ.get("TXT2SQL_DOCKER_IMAGE"))


def test_default_image_falls_back_to_the_local_build_and_says_so(engine, caplog):
    import docker
    try:
        engine.images.get(DEFAULT_IMAGE)
        pytest.skip(f"{DEFAULT_IMAGE} is in the engine: there is nothing to fall back from")
    except docker.errors.ImageNotFound:
        pass
    with caplog.at_level("WARNING", logger="harness.db.docker"):
        image = choose_image(engine, None)
    if image == DEFAULT_IMAGE:  # the registry answered: it was pulled, no warning
        assert not caplog.records
    else:
        assert image == LOCAL_TAG
        assert f"{DEFAULT_IMAGE} cannot be pulled" in caplog.text and LOCAL_TAG in caplog.text


def test_an_image_that_cannot_be_had_is_a_clear_error_and_leaves_nothing(engine):
    server = DockerServer("txt2sql-no-such-image:0")
    with pytest.raises(ProvisionError, match="--docker-image txt2sql-no-such-image:0: not in the engine and "
                                             "cannot be pulled .*txt2sql image build"):
        with server:
            pass
    assert containers_of(engine, server.owner) == []
    assert server._watchdog is None


def test_cli_docker_image_option_reaches_the_server(engine, tmp_path, capsys):
    from harness import cli
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "by-district", "output": "SELECT 1"}) + "\n")
    code = cli.main(["eval", "--db", "docker", "--docker-image", "txt2sql-no-such-image:0", "--model",
                     f"replay:{preds}", "--benchmark", str(REPO / "tests" / "data" / "mini"), "--split", "test",
                     "--out", str(tmp_path / "r"), "--no-progress", "--no-cache"])
    assert code == 2
    assert "--docker-image txt2sql-no-such-image:0: not in the engine" in capsys.readouterr().err


def test_auto_picks_docker_when_the_engine_answers(engine, monkeypatch):
    from harness.db.provision import provision
    monkeypatch.delenv("TXT2SQL_DB", raising=False)
    assert provision("auto").kind == "docker"


def test_image_build_is_quick_when_nothing_changed(engine):
    import docker

    from harness.db.image import Recipe, build_image, host_codename
    try:
        label = (engine.images.get(LOCAL_TAG).labels or {}).get(RECIPE_LABEL)
    except docker.errors.ImageNotFound:
        pytest.skip(f"no {LOCAL_TAG} here (the official image is used): `txt2sql image build` makes one")
    if label != Recipe(host_codename()).digest:
        pytest.skip(f"{LOCAL_TAG} is from another recipe; `txt2sql image build` brings it up to date")
    result = build_image(LOCAL_TAG)
    assert result.built is False and result.seconds < 10
    assert "up to date" in result.describe()


CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the launcher's disposition
from harness.db.docker import DockerServer
with DockerServer() as server:
    print(server.owner, flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["exit", "SIGINT", "SIGTERM", "SIGKILL"])
def test_no_container_is_left(engine, how):
    """After a normal exit, Ctrl-C, SIGTERM and kill -9 (through the watchdog) the container is gone."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, how], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    owner = proc.stdout.readline().strip()
    assert owner, "the child did not start its container"
    if how != "exit":
        assert len(containers_of(engine, owner)) == 1  # it was running
        proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while containers_of(engine, owner) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert containers_of(engine, owner) == []
    if shutil.which("podman") and os.geteuid() == 0:
        ps = subprocess.run(["podman", "ps", "-a", "--filter", f"label={OWNER_LABEL}={owner}", "-q"],
                            capture_output=True, text=True)
        assert ps.returncode == 0 and ps.stdout.strip() == ""


def test_container_engine_script_changes_nothing_where_an_engine_answers(engine):
    conf = Path("/etc/containers/containers.conf")
    before = conf.read_bytes() if conf.exists() else None
    proc = subprocess.run(["bash", "scripts/container-engine.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"export DOCKER_HOST={os.environ['DOCKER_HOST']}\n"
    assert "nothing to do" in proc.stderr
    assert (conf.read_bytes() if conf.exists() else None) == before
