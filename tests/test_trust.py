"""Runners run nothing but builds: whoever holds the Redis password can push jobs on Volt's queue, and
a `volt worker` (or `rq worker -w voltci.worker.VoltWorker`) refuses every job that is not a call of
Volt's own job functions — pickles, JSON jobs naming anything else, records rq cannot read — records
it failed with the reason (rq-dashboard shows it), runs nothing of it, and builds the next real build.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer
from sample_project import PASSING
from support import ROOT, child_env, run_volt

from voltci.config import Settings
from voltci.jobqueue import JOB_SERIALIZER, RUN_BUILD, RUN_LEG, RUN_SHARD, refusal, volt_queue
from voltci.models import Status
from voltci.observer import RepoWatch
from voltci.store import Store
from voltci.web import create_app


class RunsOnUnpickling:
    """A pickle gadget: loading it runs `touch PATH`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.fixture
def locked(locked_redis, tmp_path):
    """(settings, bytes connection with the password) for the locked Redis."""
    settings = Settings(redis_url=locked_redis.url, workspace_dir=str(tmp_path / "ws"), build_timeout=60)
    client = redis.Redis.from_url(locked_redis.url)
    yield settings, client
    client.close()


def push_forged_jobs(rq_conn: redis.Redis, marks: Path) -> dict[str, Path]:
    """Jobs an attacker with the password pushes; job id -> the file it would create if it ran."""
    pickled = Queue("volt", connection=rq_conn, serializer=DefaultSerializer)
    as_json = volt_queue(rq_conn, "volt")
    forged = {
        "forged-pickle": pickled.enqueue_call("os.system", args=(f"touch {marks / 'pickle'}",),
                                              job_id="forged-pickle"),
        "forged-gadget": pickled.enqueue_call(RUN_BUILD, args=(RunsOnUnpickling(marks / "gadget"), 1),
                                              job_id="forged-gadget"),
        "forged-json": as_json.enqueue_call("os.system", args=(f"touch {marks / 'json'}",), job_id="forged-json"),
        "forged-kwargs": as_json.enqueue_call("os.system", kwargs={"command": f"touch {marks / 'kwargs'}"},
                                              job_id="forged-kwargs"),
    }
    # A record rq itself cannot read: once, this ended every worker that took it.
    rq_conn.hset(Job.key_for("forged-unreadable"), mapping={
        "data": JOB_SERIALIZER.dumps(["os.system", None, [f"touch {marks / 'unreadable'}"], {}]),
        "status": "not-a-status", "origin": "volt", "created_at": "2024-01-01T00:00:00.000000Z"})
    rq_conn.rpush(as_json.key, "forged-unreadable")
    names = {"forged-pickle": "pickle", "forged-gadget": "gadget", "forged-json": "json",
             "forged-kwargs": "kwargs", "forged-unreadable": "unreadable"}
    assert set(forged) | {"forged-unreadable"} == set(names)
    return {job_id: marks / name for job_id, name in names.items()}


def enqueue_real_build(rq_conn: redis.Redis, settings: Settings, make_repo) -> str:
    repo = make_repo()
    repo.commit(PASSING, "passing tests")
    watch = RepoWatch(Store(rq_conn, settings), str(repo.path))
    watch.validate()
    [build] = watch.poll()
    return build.id


def assert_refused_and_nothing_ran(rq_conn: redis.Redis, forged: dict[str, Path], log: str) -> None:
    assert [path.name for path in forged.values() if path.exists()] == []
    failed = FailedJobRegistry("volt", connection=rq_conn, serializer=JOB_SERIALIZER)
    assert set(forged) <= set(failed.get_job_ids())
    for job_id in forged:
        job = Job.fetch(job_id, connection=rq_conn, serializer=JOB_SERIALIZER)
        assert job.get_status() == JobStatus.FAILED
        reason = job.latest_result().exc_string
        assert reason.startswith("refused by Volt: ") and "\n" not in reason, reason
        assert [line for line in log.splitlines() if f"job {job_id} refused by Volt" in line], log
    assert rq_conn.llen(volt_queue(rq_conn, "volt").intermediate_queue_key) == 0
    assert "Traceback" not in log


def test_volt_worker_refuses_forged_jobs_and_still_builds(locked, make_repo, tmp_path) -> None:
    settings, rq_conn = locked
    marks = tmp_path / "marks"
    marks.mkdir()
    forged = push_forged_jobs(rq_conn, marks)
    build_id = enqueue_real_build(rq_conn, settings, make_repo)

    worker = run_volt("worker", "--burst", env={"VOLT_REDIS_URL": settings.redis_url,
                                                "VOLT_WORKSPACE_DIR": settings.workspace_dir}, timeout=180)

    assert worker.returncode == 0, worker.stderr[-3000:]
    assert_refused_and_nothing_ran(rq_conn, forged, worker.stderr)
    assert Store(redis.Redis.from_url(settings.redis_url, decode_responses=True)).records.get_build(
        build_id).status is Status.PASSED
    reasons = {job_id: Job.fetch(job_id, connection=rq_conn, serializer=JOB_SERIALIZER).latest_result().exc_string
               for job_id in forged}
    assert "not JSON" in reasons["forged-pickle"] and "not JSON" in reasons["forged-gadget"]
    assert "it names 'os.system'" in reasons["forged-json"] and "it names 'os.system'" in reasons["forged-kwargs"]
    assert "cannot be read" in reasons["forged-unreadable"]
    assert_dashboard_shows_the_refusals(settings, forged)


def assert_dashboard_shows_the_refusals(settings: Settings, forged: dict[str, Path]) -> None:
    """rq-dashboard in `volt web` lists each refused job among the failed ones, with its reason."""
    web = create_app(settings).test_client()
    listed = web.get("/rq/0/data/jobs/volt/failed/20/asc/1.json").get_json()["jobs"]
    reasons = {job["id"]: job["exc_info"] for job in listed}
    assert set(forged) <= set(reasons) and all(reasons[j].startswith("refused by Volt") for j in forged), reasons
    for job_id in forged:
        assert web.get(f"/rq/0/data/job/{job_id}.json").status_code == 200
        assert web.get(f"/rq/0/view/job/{job_id}").status_code == 200


def test_rq_worker_with_volts_class_reads_json_even_without_dash_s(locked, make_repo, tmp_path) -> None:
    """rq's CLI hands the worker class its pickle serializer unless -S says otherwise; VoltWorker uses JSON."""
    settings, rq_conn = locked
    marks = tmp_path / "marks"
    marks.mkdir()
    forged = push_forged_jobs(rq_conn, marks)
    build_id = enqueue_real_build(rq_conn, settings, make_repo)

    worker = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "-w", "voltci.worker.VoltWorker", "--burst", "volt"],
        env=child_env(RQ_REDIS_URL=settings.redis_url, VOLT_WORKSPACE_DIR=settings.workspace_dir),
        cwd=ROOT, capture_output=True, text=True, timeout=180, start_new_session=True)

    assert worker.returncode == 0, worker.stderr[-3000:]
    assert_refused_and_nothing_ran(rq_conn, forged, worker.stdout + worker.stderr)
    build = Store(redis.Redis.from_url(settings.redis_url, decode_responses=True)).records.get_build(build_id)
    assert build.status is Status.PASSED


# ---------------------------------------------------------------- what refusal looks at

def job_calling(func: str, args: list | tuple = (), kwargs: dict | None = None, **options) -> Job:
    return Job.create(func, args=args, kwargs=kwargs, connection=redis.Redis(), serializer=JOB_SERIALIZER,
                      **options)


def test_volts_own_jobs_pass() -> None:
    assert refusal(job_calling(RUN_BUILD, ["proj-" + "a" * 40, 1])) is None
    assert refusal(job_calling(RUN_SHARD, ["proj-" + "a" * 40, 2, 3, 1])) is None
    assert refusal(job_calling(RUN_LEG, ["proj-" + "a" * 40 + "-a1-L2", 1])) is None


@pytest.mark.parametrize("func, args, kwargs, why", [
    ("os.system", ["touch /tmp/x"], None, "it names 'os.system'"),
    ("voltci.runner.execute", ["b", 1], None, "it names 'voltci.runner.execute'"),
    (RUN_BUILD, ["b"], None, "takes (str, int)"),
    (RUN_BUILD, ["b", 1, 2], None, "takes (str, int)"),
    (RUN_BUILD, ["b", "1"], None, "takes (str, int)"),
    (RUN_BUILD, ["b", True], None, "takes (str, int)"),
    (RUN_BUILD, ["b", -1], None, "takes (str, int)"),
    (RUN_BUILD, ["b c", 1], None, "takes (str, int)"),
    (RUN_BUILD, ["b:c", 1], None, "takes (str, int)"),
    (RUN_BUILD, [["b"], 1], None, "takes (str, int)"),
    (RUN_SHARD, ["b", 1, 2], None, "takes (str, int, int, int)"),
    (RUN_LEG, ["b", 1, 2], None, "takes (str, int)"),
    (RUN_LEG, ["b c", 1], None, "takes (str, int)"),
    (RUN_LEG, ["b", 1], {"attempt": 2}, "positional arguments only"),
    (RUN_BUILD, ["b", 1], {"attempt": 2}, "positional arguments only"),
])
def test_anything_else_is_refused_with_a_one_line_reason(func, args, kwargs, why) -> None:
    reason = refusal(job_calling(func, args, kwargs))
    assert reason is not None and reason.startswith("refused by Volt: ") and why in reason and "\n" not in reason


def test_data_that_is_not_volts_json_is_refused_without_being_loaded(tmp_path) -> None:
    job = job_calling(RUN_BUILD, ["b", 1])
    job.data = pickle.dumps(("os.system", None, (RunsOnUnpickling(tmp_path / "ran"),), {}))
    assert "not JSON" in refusal(job)
    for data in (b"{}", b'["os.system"]', b"[1, null, [], {}]", b'"x"'):
        job.data = data
        assert refusal(job) is not None
    assert not (tmp_path / "ran").exists()


def test_callbacks_and_instances_are_refused() -> None:
    from rq.job import Callback

    assert "callbacks" in refusal(job_calling(RUN_BUILD, ["b", 1], on_success=Callback("os.system")))
    job = job_calling(RUN_BUILD, ["b", 1])
    job.data = JOB_SERIALIZER.dumps([RUN_BUILD, {"x": 1}, ["b", 1], {}])
    assert "positional arguments only" in refusal(job)


# ---------------------------------------------------------------- the embedded Redis' password

def test_redis_server_password_is_in_a_private_config_file_never_in_its_arguments(locked_redis) -> None:
    """redis-server rewrites its process title soon after it starts, so /proc shows little; what it was
    executed with is Popen's argument list."""
    from support import LOCKED_PASSWORD

    assert all(LOCKED_PASSWORD not in arg for arg in locked_redis.proc.args)
    assert stat.S_IMODE(locked_redis.config_path.stat().st_mode) == 0o600
    assert f'requirepass "{LOCKED_PASSWORD}"' in locked_redis.config_path.read_text()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=locked_redis.port, socket_timeout=5).ping()
    assert redis.Redis.from_url(locked_redis.url, socket_timeout=5).ping()
