"""Jobs: each a ``tunesmith VERB …`` subprocess in its own process group, its record on disk
(``.tunesmith-ui/jobs/<id>.json``: argv, pid, start time, run folder, log, status), so a page reload or a new
UI finds every job again. Stop: SIGINT to the group (training saves a checkpoint), SIGTERM if still running
after a grace period; resume: the same command again (train and identity continue from their checkpoint)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import UserError
from ..registry import run_folder
from .forms import check, command, verb
from .workspace import Workspace

GRACE_S = 8.0


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (so a reused pid is not taken for the job), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else fields[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return "?"
        except OSError:
            return None


class Jobs:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.dir = ws.state("jobs")
        self.procs: dict[str, subprocess.Popen] = {}  # the jobs this UI started (reaped here)
        self.lock = threading.Lock()

    # ---- records
    def _path(self, jid: str) -> Path:
        if not jid.replace("-", "").replace("_", "").isalnum():
            raise UserError(f"no job '{jid}'")
        return self.dir / f"{jid}.json"

    def get(self, jid: str) -> dict:
        p = self._path(jid)
        if not p.is_file():
            raise UserError(f"no job '{jid}'")
        return self._refresh(json.loads(p.read_text()))

    def _save(self, job: dict) -> None:
        self.ws.write_state(f"jobs/{job['id']}.json", json.dumps(job, indent=1))

    def all(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        jobs = [self.get(p.stem) for p in sorted(self.dir.glob("*.json"))]
        return sorted(jobs, key=lambda j: j["started"], reverse=True)

    def _refresh(self, job: dict) -> dict:
        """The status from the process and the exit code the runner left."""
        if job["status"] not in ("running", "stopping"):
            return job
        proc = self.procs.get(job["id"])
        if proc is not None:
            proc.poll()  # reap it, so a finished child is not a zombie that still "exists"
        rc_file = self.dir / f"{job['id']}.rc"
        alive = _proc_start(job["pid"]) not in (None,) and _proc_start(job["pid"]) == job.get("proc_start")
        if alive:
            return job
        rc = int(rc_file.read_text() or 1) if rc_file.is_file() else None
        job["rc"] = rc
        job["finished"] = job.get("finished") or time.time()
        if job["status"] == "stopping" or job.get("stop_requested"):
            job["status"] = "stopped"
        elif rc == 0:
            job["status"] = "done"
        else:
            job["status"] = "failed"
        self._save(job)
        return job

    # ---- actions
    def start(self, name: str, values: dict) -> dict:
        """Validate as the CLI does, check every output lies in the workspace, then run the command."""
        v = verb(name)
        checked = check(name, values)
        cfg, argv = checked["cfg"], list(checked["argv"])
        field = v.output_field
        run = getattr(cfg, field, None) if field else None
        if field and run is None and v.run_name:
            run = run_folder(v, cfg)
            argv.append(f"{field}={run}")
        from ..outputs import field_values

        for out in v.writes:
            for value in field_values(cfg, out.field):
                self.ws.path(value, out.field)
        if run is not None:
            self.ws.path(run, field)
        jid = f"{time.strftime('%Y%m%d-%H%M%S')}-{v.job}-{secrets.token_hex(2)}"
        job = {"id": jid, "verb": v.name, "argv": argv, "cli": command(v, argv), "values": values,
               "run": self.ws.rel(run) if run else None, "log": f"jobs/{jid}.log", "status": "running",
               "started": time.time(), "finished": None, "rc": None, "attempts": 0}
        self._launch(job)
        return job

    def _launch(self, job: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{job['id']}.rc").unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.ws.state(job["log"]), "ab") as log:
            log.write(f"$ {job['cli']}\n".encode())
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "tunesmith.ui.runner", str(self.dir / f"{job['id']}.rc"),
                                     *verb(job["verb"]).name.split(), *job["argv"]], cwd=self.ws.root, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[job["id"]] = proc
        job.update(pid=proc.pid, proc_start=_proc_start(proc.pid), status="running", rc=None, finished=None,
                   stop_requested=False, attempts=job.get("attempts", 0) + 1)
        self._save(job)

    def stop(self, jid: str) -> dict:
        job = self.get(jid)
        if job["status"] != "running":
            raise UserError(f"job {jid} is {job['status']}, not running")
        job.update(status="stopping", stop_requested=True)
        self._save(job)
        _signal(job["pid"], signal.SIGINT)

        def escalate():
            time.sleep(GRACE_S)
            if _proc_start(job["pid"]) == job.get("proc_start"):
                _signal(job["pid"], signal.SIGTERM)

        threading.Thread(target=escalate, daemon=True).start()
        return job

    def resume(self, jid: str) -> dict:
        job = self.get(jid)
        if job["status"] in ("running", "stopping"):
            raise UserError(f"job {jid} is still {job['status']}")
        if job["status"] == "done":
            raise UserError(f"job {jid} finished: start a new one")
        self._launch(job)
        return job

    def log_tail(self, job: dict, n: int = 60) -> str:
        p = self.ws.state(job["log"])
        if not p.is_file():
            return ""
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - 20000))
            text = f.read().decode("utf-8", "replace").replace("\r", "\n")
        return "\n".join([ln for ln in text.splitlines() if ln.strip()][-n:])


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the job's own session: its pid is its group id
    except ProcessLookupError:
        pass
