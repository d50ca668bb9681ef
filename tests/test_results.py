"""flows.results: persisted task results are JSON, round-trip, and a replaced result file
never runs code (real Prefect server, real result files)."""

from __future__ import annotations

import json
import pathlib
import uuid
from pathlib import Path
from typing import Any

import pytest

MARKER = Path("/nonexistent")  # set per test: the file a tampered result would create


class Evil:
    """Unpickling it creates MARKER (what a planted result file would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def evil_hook(obj: dict[str, Any]) -> Any:
    """A JSON object hook a tampered record names: it must never be called."""
    Path(obj.get("marker", MARKER)).touch()
    return obj


def _files(folder: Path) -> dict[str, Path]:
    """Result files by the `x` their result holds (plain JSON files only)."""
    out = {}
    for p in folder.glob("*"):
        try:
            rec = json.loads(p.read_bytes())
            out[json.loads(rec["result"])["x"]] = p
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _pickle_record(key: str, marker: Path) -> bytes:
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    meta = ResultRecordMetadata(
        serializer=PickleSerializer(picklelib="cloudpickle"), storage_key=key
    )
    return ResultRecord(result=Evil(marker), metadata=meta).serialize()


def test_check_record_accepts_only_our_json_serializer():
    from flows.results import RESULT_SERIALIZER, UntrustedResult, check_record

    ours = json.dumps(
        {"metadata": {"serializer": RESULT_SERIALIZER.model_dump(mode="json")}, "result": "{}"}
    ).encode()
    assert check_record(ours) == ours
    foreign = RESULT_SERIALIZER.model_dump(mode="json") | {"object_decoder": "os.system"}
    for bad in (
        b"\x80\x04pickle",
        json.dumps({"metadata": {"serializer": foreign}, "result": "{}"}).encode(),
        json.dumps({"metadata": {"serializer": {"type": "pickle"}}, "result": "x"}).encode(),
        ours.replace(b'"result": "{}"', b'"result": {"a": 1}'),
    ):
        with pytest.raises(UntrustedResult):
            check_record(bad)


def test_decode_object_rebuilds_our_models_and_paths_and_refuses_other_classes():
    from flows.results import UntrustedResult, decode_object
    from training.sweep import TrainResult

    res = TrainResult(run_name="r", candidate_id="c", fold=0, ok=True, attempts=1)
    enc = {"__class__": "training.sweep.TrainResult", "data": res.model_dump(mode="json")}
    assert decode_object(enc) == res
    assert decode_object({"__class__": "pathlib.PosixPath", "data": "/a"}) == Path("/a")
    assert decode_object({"plain": 1}) == {"plain": 1}
    for name in ("os.system", "subprocess.Popen", "tests.test_results.Evil", "core.no.Such"):
        with pytest.raises(UntrustedResult):
            decode_object({"__class__": name, "data": "x"})


def test_result_store_reads_ours_back_and_refuses_planted_records_without_running_them(
    tmp_path: Path,
) -> None:
    """Prefect's own read path (ResultStore.exists / read) over our storage, no server."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from flows.results import RESULT_SERIALIZER, JsonResultStorage
    from training.sweep import TrainResult

    def store() -> ResultStore:  # a fresh one each time: no in-memory cache
        storage = JsonResultStorage(basepath=str(tmp_path))
        return ResultStore(result_storage=storage, serializer=RESULT_SERIALIZER)

    model = TrainResult(run_name="r", candidate_id="c", fold=1, ok=True, attempts=1)
    value = {"x": "ours", "path": Path("/data/x"), "model": model, "n": [1, 2.5]}
    store().write(value, key="ours")
    record = json.loads((tmp_path / "ours").read_bytes())  # plain JSON on disk
    assert record["metadata"]["serializer"] == RESULT_SERIALIZER.model_dump(mode="json")
    assert store().exists("ours") and store().read("ours").result == value

    ran = tmp_path / "ran"
    (tmp_path / "pickle").write_bytes(_pickle_record("pickle", ran))
    record["metadata"]["serializer"]["object_decoder"] = f"{__name__}.evil_hook"
    record["result"] = json.dumps({"x": "planted", "marker": str(ran)})
    (tmp_path / "decoder").write_text(json.dumps(record))
    record["metadata"]["serializer"] = RESULT_SERIALIZER.model_dump(mode="json")
    record["result"] = json.dumps({"__class__": f"{__name__}.Evil", "data": {}})
    (tmp_path / "class").write_text(json.dumps(record))
    for key in ("pickle", "decoder", "class"):
        assert store().exists(key) is False  # a cache miss: the task runs again
        with pytest.raises(ValueError):
            store().read(key)
    assert not ran.exists()
    # the control: Prefect's own storage trusts the file's serializer and runs the pickle
    assert ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path))).exists("pickle")
    assert ran.exists()


@pytest.mark.slow  # two flow runs on the test server: ~4 s
def test_persisted_results_are_json_round_trip_and_a_tampered_file_is_not_run(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three tamperings of our results (pickle record; JSON naming another decoder; JSON
    naming a foreign class) run nothing and are recomputed; the control, the same
    pickle planted under Prefect's default storage, does run (the threat is real)."""
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.settings import get_current_settings

    from flows.results import PERSISTED, RESULT_SERIALIZER, ensure_result_storage
    from training.sweep import TrainResult

    storage = Path(get_current_settings().results.local_storage_path)
    run = uuid.uuid4().hex
    calls: list[str] = []

    @task(cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
    def ours(x: str) -> dict[str, Any]:
        calls.append(x)
        model = TrainResult(run_name=x, candidate_id="c", fold=1, ok=True, attempts=1)
        return {"x": x, "path": Path("/data") / x, "model": model, "n": [1, 2.5]}

    @task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, result_serializer="json")
    def prefects_default(x: str) -> dict[str, Any]:
        calls.append(x)
        return {"x": x}

    @flow
    def pipeline() -> list[Any]:
        ensure_result_storage()
        return [ours(f"{run}-{i}") for i in range(3)] + [prefects_default(f"{run}-control")]

    first = pipeline()
    assert first[0]["path"] == Path("/data") / f"{run}-0"
    assert first[0]["model"].run_name == f"{run}-0" and first[0]["n"] == [1, 2.5]
    files = _files(storage)
    for i in range(3):
        rec = json.loads(files[f"{run}-{i}"].read_bytes())
        assert rec["metadata"]["serializer"] == RESULT_SERIALIZER.model_dump(mode="json")

    # what a hostile writer of the data folder plants in each result file
    markers = {name: tmp_path / name for name in ("pickle", "decoder", "class", "control")}
    f0, f1, f2, fc = (files[f"{run}-{i}"] for i in (0, 1, 2, "control"))
    f0.write_bytes(
        _pickle_record(json.loads(f0.read_bytes())["metadata"]["storage_key"], markers["pickle"])
    )
    rec = json.loads(f1.read_bytes())
    rec["metadata"]["serializer"]["object_decoder"] = f"{__name__}.evil_hook"
    rec["result"] = json.dumps({"x": "planted", "marker": str(markers["decoder"])})
    f1.write_text(json.dumps(rec))
    rec = json.loads(f2.read_bytes())
    rec["result"] = json.dumps({"__class__": f"{__name__}.Evil", "data": {}})
    f2.write_text(json.dumps(rec))
    fc.write_bytes(
        _pickle_record(json.loads(fc.read_bytes())["metadata"]["storage_key"], markers["control"])
    )
    monkeypatch.setattr(f"{__name__}.MARKER", markers["class"])

    before = len(calls)
    again = pipeline()
    assert not markers["pickle"].exists()
    assert not markers["decoder"].exists() and not markers["class"].exists()
    assert [r["x"] for r in again[:3]] == [f"{run}-{i}" for i in range(3)]
    assert calls[before:] == [f"{run}-{i}" for i in range(3)]  # recomputed, not decoded
    for i in range(3):  # and the result files are ours again
        assert (
            json.loads(files[f"{run}-{i}"].read_bytes())["metadata"]["serializer"]["type"] == "json"
        )
    # the control: Prefect's own storage trusts the file's serializer and ran the pickle
    assert markers["control"].exists()
