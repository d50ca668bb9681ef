"""Kill campaign: SIGKILL real `chappie` commands at seeded random moments, then count what
they left behind and what the next runs make of the data folder.

    python -m tests.infra.kill_campaign --kills 24 --seed 0 --json /tmp/kills.json

On conf/tiny.yaml: clean runs of `ingest synthetic`, `features` and `train` in one folder
give the reference (rows, slice digests) and each command's duration; then, in a second
folder, `--kills` rounds of that sequence each SIGKILL one step (seeded choice; the steps
before it complete; its published outputs are removed first so that it has its whole work
to do) at a uniform moment of its clean duration (server start included), the way a
nightly is interrupted. After each kill: the
command's processes still alive 5 s later (marked by environment, zombies excluded) and
whether the data folder's lock is still held. At the end, ingest, features and train run
to completion: rows lost or duplicated against the reference, slices not byte-identical,
`.tmp` leftovers, and MLflow runs still RUNNING.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.infra.processes import TINY, command_env, start, survivors_after

COMMANDS = {
    "ingest": ["ingest", "synthetic", "--config", str(TINY)],
    "features": ["features", "--config", str(TINY)],
    "train": ["train", "--config", str(TINY)],
}
SYMBOL = "XBTUSD"
#: what a step publishes: removed before the step is killed, so that it has work to do
#: (a re-run of finished work is a cached no-op) and the kill lands in the middle of it
OUTPUTS = {"ingest": ["events"], "features": ["slices", "bars", "stats"], "train": ["training"]}


def run(data: Path, name: str, timeout_s: float = 1800) -> float:
    """Run one command to completion in `data`; returns its wall time. Raises on failure."""
    t0 = time.monotonic()
    p = start(COMMANDS[name], command_env(data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"chappie {name} failed ({p.returncode}): {err[-2000:]}")
    return time.monotonic() - t0


def snapshot(data: Path) -> dict[str, Any]:
    """Event rows per day and kind, slice digests, leftovers, MLflow runs by status."""
    from core.paths import DataLayout
    from features.store import audit_store
    from ingest.events import list_event_days, read_events

    layout = DataLayout(data)
    rows = {}
    for day in list_event_days(layout, SYMBOL):
        book, trades = read_events(layout, SYMBOL, [day])
        rows[day] = {"book": book.height, "trades": trades.height}
    slices = {
        p.name: json.loads(p.read_text())["sha256"]
        for p in sorted(layout.slices_root.glob("*/*.manifest.json"))
    }
    audits = [audit_store(f) for f in sorted(layout.slices_root.glob("*")) if f.is_dir()]
    leftovers = sorted(str(p.relative_to(data)) for p in data.rglob(".*.tmp"))
    return {
        "rows": rows,
        "slices": slices,
        "audit_ok": all(a.ok for a in audits) and bool(audits),
        "leftovers": leftovers,
        "runs": _runs_by_status(data),
    }


def _runs_by_status(data: Path) -> dict[str, int]:
    import sqlite3

    db = data / "mlflow.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        return dict(con.execute("select status, count(*) from runs group by status").fetchall())


def lock_held(data: Path) -> bool:
    from core.locks import FolderBusy, hold_folder

    try:
        with hold_folder(data, "campaign"):
            return False
    except FolderBusy:
        return True


def campaign(workdir: Path, kills: int, seed: int) -> dict[str, Any]:
    """The whole campaign (module docstring); returns its figures."""
    ref, data = workdir / "reference", workdir / "killed"
    durations = {name: run(ref, name) for name in COMMANDS}
    reference = snapshot(ref)
    rng = random.Random(seed)
    log = []
    steps = list(COMMANDS)
    for i in range(kills):
        # one nightly by hand: the steps before the chosen one run to completion (cached
        # after the first round), the chosen one is SIGKILLed at a uniform moment of its
        # clean duration, server start included
        name = rng.choice(steps)
        for before in steps[: steps.index(name)]:
            run(data, before)
        delay = rng.uniform(0.5, durations[name])
        for out in OUTPUTS[name]:
            shutil.rmtree(data / out, ignore_errors=True)
        env = command_env(data)
        p = start(COMMANDS[name], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(delay)
            finished = True
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            finished = False
        left = survivors_after(env["CHAPPIE_TEST_PROCESS_MARK"], 5.0)
        log.append(
            {
                "i": i,
                "command": name,
                "kill_at_s": round(delay, 2),
                "finished_before_kill": finished,
                "exit": p.returncode,
                "left_behind": [c for _, _, c in left],
                "lock_held_after": lock_held(data),
            }
        )
        print(json.dumps(log[-1]), flush=True)
    for name in COMMANDS:  # the next runs, to completion
        run(data, name)
    after = snapshot(data)
    ref_rows = {(d, k): n for d, kinds in reference["rows"].items() for k, n in kinds.items()}
    got_rows = {(d, k): n for d, kinds in after["rows"].items() for k, n in kinds.items()}
    return {
        "seed": seed,
        "durations_s": {k: round(v, 1) for k, v in durations.items()},
        "kills": sum(1 for e in log if not e["finished_before_kill"]),
        "runs_started": len(log),
        "processes_left_behind": sum(len(e["left_behind"]) for e in log),
        "locks_left_held": sum(1 for e in log if e["lock_held_after"]),
        "rows_reference": sum(ref_rows.values()),
        "rows_lost": sum(max(0, n - got_rows.get(k, 0)) for k, n in ref_rows.items()),
        "rows_duplicated": sum(max(0, n - ref_rows.get(k, 0)) for k, n in got_rows.items()),
        "slices_identical": after["slices"] == reference["slices"],
        "audit_ok": after["audit_ok"],
        "leftovers_after": after["leftovers"],
        "mlflow_runs_after": after["runs"],
        "log": log,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.kill_campaign")
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a new temp folder")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    import tempfile

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="chappie-kills-"))
    out = campaign(workdir, args.kills, args.seed)
    summary = {k: v for k, v in out.items() if k != "log"}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
