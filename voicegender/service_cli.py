"""CLI commands of the job service: submit, status, results, report, jobs, cancel, worker, demo, db."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path

from db import jobs as repo
from db.schema import FINAL_JOB_STATES, Job
from voicegender.bootstrap import Services, build_services
from voicegender.settings import REPO_ROOT, Settings



class JobNotFound(LookupError):
    pass


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit a folder of recordings as a job")
    p.add_argument("path", type=Path)
    p.add_argument("--labels", type=Path, help="CSV with path,gender (default: labels.csv in the folder)")
    p.add_argument("--idempotency-key", help="submitting again with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends (starts an embedded worker if none is alive)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)
    for name, func, text in (("status", cmd_status, "a job's state and progress"), ("cancel", cmd_cancel, "cancel a job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    p = sub.add_parser("results", help="a job's per-file results")
    p.add_argument("job_id")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("report", help="print the path of a job's HTML report")
    p.add_argument("job_id")
    p.add_argument("--open", action="store_true", help="open it in a browser")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("api", help="serve the HTTP API (OpenAPI docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--access-log", action="store_true", help="log every request (off: a poll-heavy client makes it a tenth of the API's CPU; the proxy in front usually logs them)")
    p.set_defaults(func=cmd_api)
    p = sub.add_parser("demo", help="classify the bundled examples through a real worker and print the report path")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("bench", help="measure speed: model limit, end to end, seed-style loop, features, scale, latency, memory")
    from bench.cli import add_arguments as add_bench_arguments  # argparse only: cheap at start-up

    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("db", help="database maintenance")
    p.add_argument("action", choices=("upgrade",))
    p.set_defaults(func=cmd_db)
    add_model_commands(sub)


def _job(services: Services, job_id: str) -> Job:
    with services.sessions() as s:
        job = s.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    return job


def job_status(services: Services, job_id: str) -> dict:
    with services.sessions() as s:
        status = repo.job_status(s, job_id)
    if status is None:
        raise JobNotFound(f"no job with id {job_id}")
    return status


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from worker.submit import submit_folder

    services = build_services(settings)
    job, created = submit_folder(settings, services.sessions, services.app, args.path.resolve(), labels_csv=args.labels, idempotency_key=args.idempotency_key)
    if not args.wait:
        print(json.dumps(job_status(services, job.id)) if args.json else job.id)
        return 0
    print(job.id, file=sys.stderr)
    state = wait_for_job(services, job.id)
    status = job_status(services, job.id)
    print(json.dumps(status) if args.json else f"{job.id} {state} report: {status['report']}")
    return 0 if state in ("done", "done_with_errors") else 1


def wait_for_job(services: Services, job_id: str, *, poll_s: float = 0.2) -> str:
    """Progress bar until the job ends; starts an embedded worker when none is alive."""
    from tqdm import tqdm

    # Into a log or pipe, a redraw every poll would be a line per 0.2 s: there it draws on progress only, at most every 10 s.
    mininterval = 0.1 if sys.stderr.isatty() else 10.0
    with a_worker_alive(services) as check_worker:
        with tqdm(total=_job(services, job_id).total, unit="file", file=sys.stderr, desc="classifying", mininterval=mininterval) as bar:
            while True:
                status = job_status(services, job_id)
                if (settled := status["done"] + status["failed"] + status["cancelled"]) > bar.n:
                    bar.update(settled - bar.n)
                if status["state"] in FINAL_JOB_STATES:
                    return status["state"]
                check_worker()
                time.sleep(poll_s)


@contextlib.contextmanager
def a_worker_alive(services: Services) -> Iterator[Callable[[], None]]:
    """An embedded worker for the block when none is alive; yields a check that raises once that worker has exited."""
    embedded = None
    with services.sessions() as s:
        if not repo.live_workers(s, within_s=3 * services.settings.heartbeat_s):
            embedded = start_embedded_worker()

    def check() -> None:
        if embedded is not None and embedded.poll() is not None:
            raise RuntimeError(f"the embedded worker exited with code {embedded.returncode}")

    try:
        yield check
    finally:
        if embedded is not None:
            stop_worker(embedded)


def start_embedded_worker() -> subprocess.Popen:
    """A real worker process (solo pool) for the duration of one command."""
    cmd = [sys.executable, "-m", "voicegender", "worker", "--pool", "solo", "--concurrency", "1"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_worker(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    proc.terminate()  # Celery's warm shutdown: finishes the current task
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status = job_status(build_services(settings), args.job_id)
    if args.json:
        print(json.dumps(status))
    else:
        print(f"{status['id']} {status['state']} {status['done'] + status['failed']}/{status['total']} (failed {status['failed']}) model {status['model_version']}")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    services = build_services(settings)
    with services.sessions() as s:
        if repo.request_cancel(s, args.job_id) is None:
            raise JobNotFound(f"no job with id {args.job_id}")
    from worker.names import FINALIZE_JOB

    services.app.send_task(FINALIZE_JOB, args=[args.job_id])
    print(json.dumps(job_status(services, args.job_id)) if args.json else f"{args.job_id} cancel requested")
    return 0


def job_results(services: Services, job_id: str) -> list[dict]:
    with services.sessions() as s:
        rows = repo.job_results(s, job_id)
    if rows is None:
        raise JobNotFound(f"no job with id {job_id}")
    return rows


def cmd_results(args: argparse.Namespace, settings: Settings) -> int:
    rows = job_results(build_services(settings), args.job_id)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=repo.RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    job = _job(build_services(settings), args.job_id)
    if not job.report_path:
        print(f"voicegender: job {job.id} has no report yet (state {job.state})", file=sys.stderr)
        return 1
    print(job.report_path)
    if args.open:
        webbrowser.open(Path(job.report_path).as_uri())
    return 0


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    services = build_services(settings)
    with services.sessions() as s:
        ids = [j.id for j in repo.list_jobs(s, limit=args.limit)]
    statuses = [job_status(services, i) for i in ids]
    if args.json:
        print(json.dumps(statuses, indent=2))
    for st in [] if args.json else statuses:
        print(f"{st['id']}  {st['state']:<16} {st['done'] + st['failed']}/{st['total']}  {st['source']}")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.app import import_task_code, install_worker_signals, worker_name

    import_task_code()  # before the pool forks (see its note)
    services = build_services(settings)
    install_worker_signals(services.app)
    if settings.worker_nice:
        os.nice(settings.worker_nice)  # before the pool forks: its children inherit it
    argv = ["worker", "--loglevel=INFO", f"--pool={args.pool}", "-n", worker_name()]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    services.app.worker_main(argv)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_api

    # factory=True: the app (engine, Celery app) is built when uvicorn starts, not at import.
    uvicorn.run(lambda: create_api(build_services(settings)), factory=True, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker.submit import submit_folder

    services = build_services(settings)
    job, _ = submit_folder(settings, services.sessions, services.app, REPO_ROOT / "examples")
    print(f"job {job.id}: {job.total} recordings from examples/", file=sys.stderr)
    state = wait_for_job(services, job.id)
    status = job_status(services, job.id)
    for row in job_results(services, job.id):
        print(f"{row['path']:<45} {row['prediction']:<7} p_female={row['p_female']}  label={row['label']}", file=sys.stderr)
    print(f"state: {state}", file=sys.stderr)
    print(status["report"])
    return 0 if state in ("done", "done_with_errors") else 1


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.cli import run

    return run(args)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import upgrade_database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.db_url)
    print(f"database at head: {settings.db_url}")
    return 0


# --- the model lifecycle: registry, promotion, retraining, the beat ------------------------------


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the model registry: every version, its status and held-out metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("promote", help="make a registered version the active model (workers use it from their next chunk)")
    p.add_argument("version")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("retrain", help="train a candidate on the configured sources and labelled jobs; promote it only if not worse")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends (starts an embedded worker if none is alive)")
    p.add_argument("--steps", type=int, help="training steps (default VOICEGENDER_RETRAIN_STEPS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retrain)
    p = sub.add_parser("runs", help="retrain runs, newest first: state, decision and reason")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("beat", help="run Celery beat: the retrain schedule (VOICEGENDER_RETRAIN_CRON); run exactly one")
    p.set_defaults(func=cmd_beat)


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from db import registry

    services = build_services(settings)
    with services.sessions() as s:
        models = [registry.describe_model(m) for m in registry.list_models(s)]
    if args.json:
        print(json.dumps(models, indent=2))
    for m in [] if args.json else models:
        bacc = m["metrics"].get("balanced_accuracy")
        shown = "-" if bacc is None else f"{bacc:.4f}"
        print(f"{m['version']:<36} {m['status']:<9} balanced_accuracy {shown:<7} parent {m['parent_version'] or '-'}  {m['created_at'][:19]}")
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from db import registry

    services = build_services(settings)
    with services.sessions() as s:
        try:
            old, new = registry.promote(s, args.version)
        except (registry.ModelNotFound, registry.RegistryConflict) as exc:
            print(f"voicegender: error: {exc}", file=sys.stderr)
            return 2
    print(f"{new} is active" + (f" (was {old})" if old != new else " (already)"))
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from db import registry
    from worker.names import RETRAIN
    from worker.requests import request_retrain

    services = build_services(settings)
    try:
        run = request_retrain(services.sessions, settings, trigger="manual")
    except registry.RetrainRunning as exc:
        print(f"voicegender: refused: {exc}", file=sys.stderr)
        return 3
    overrides = {"steps": args.steps} if args.steps else {}
    services.app.send_task(RETRAIN, kwargs={"run_id": run.id, "overrides": overrides})
    if not args.wait:
        print(json.dumps(run_status(services, run.id)) if args.json else run.id)
        return 0
    print(f"retrain run {run.id}", file=sys.stderr)
    status = wait_for_run(services, run.id)
    print(json.dumps(status) if args.json else f"run {run.id} {status['state']} {status['decision'] or ''}: {status['reason'] or status['error']}\nreport: {status['report']}")
    return 0 if status["state"] == "done" else 1


def run_status(services: Services, run_id: int) -> dict:
    from db import registry

    with services.sessions() as s:
        return registry.describe_run(registry.get_run(s, run_id))


def wait_for_run(services: Services, run_id: int, *, poll_s: float = 0.5) -> dict:
    """Show the run's stage until it ends; an embedded worker runs it when none is alive."""
    with a_worker_alive(services) as check_worker:
        shown = None
        while True:
            status = run_status(services, run_id)
            if status["stage"] != shown:
                print(f"  {status['stage']}", file=sys.stderr)
                shown = status["stage"]
            if status["state"] != "running":
                return status
            check_worker()
            time.sleep(poll_s)


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    from db import registry

    services = build_services(settings)
    with services.sessions() as s:
        runs = [registry.describe_run(r) for r in registry.list_runs(s, limit=args.limit)]
    if args.json:
        print(json.dumps(runs, indent=2))
    for r in [] if args.json else runs:
        print(f"{r['id']:>4} {r['state']:<8} {r['decision'] or '-':<9} {r['candidate_version'] or '-':<36} {r['reason'] or r['error'] or r['stage'] or ''}")
    return 0


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    services = build_services(settings)
    schedule = services.app.conf.beat_schedule
    logging.getLogger(__name__).info("beat schedule: %s", {k: str(v["schedule"]) for k, v in schedule.items()} or "empty (VOICEGENDER_RETRAIN_CRON is not set)")
    services.app.start(["beat", "--loglevel=INFO"])
    return 0
