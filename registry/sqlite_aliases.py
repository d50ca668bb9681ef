"""Read a registered model's aliases straight from an MLflow SQLite store. Adapter.

`chappie rollback` answers "nothing to roll back" (and `--dry-run`) from this before it
imports mlflow: importing mlflow and opening its SQLAlchemy store take about 2 s of the
3 s a user error may take. Read-only, standard library only; whenever it cannot answer
for sure (not a local SQLite URI, no such file, a schema it does not know, the model in
more than one workspace) it returns None and the caller asks MLflow as usual.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

DEFAULT_WORKSPACE = "default"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` tracking URI, None for any other URI."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    raw = unquote(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None if raw in ("", ":memory:") else Path(raw)


def read_aliases(tracking_uri: str, model_name: str) -> dict[str, str] | None:
    """alias -> version (both str, as MLflow's client returns them) of `model_name`, {} when
    the model has none or does not exist; None when this store cannot be read this way."""
    path = sqlite_file(tracking_uri)
    if path is None or not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        cols = {row[1] for row in con.execute("PRAGMA table_info(registered_model_aliases)")}
        if not {"alias", "version", "name"} <= cols:
            return None
        if "workspace" in cols:
            rows = con.execute(
                "SELECT alias, version, workspace FROM registered_model_aliases WHERE name = ?",
                (model_name,),
            ).fetchall()
            if any(ws != DEFAULT_WORKSPACE for _, _, ws in rows):
                return None  # workspaces in use: let MLflow resolve which one is meant
        else:
            rows = con.execute(
                "SELECT alias, version FROM registered_model_aliases WHERE name = ?",
                (model_name,),
            ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return {str(r[0]): str(r[1]) for r in rows}
