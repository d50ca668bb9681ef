"""Where everything lives under the data folder. Pure: builds paths, touches nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """The data folder's layout (CHAPPIE_DATA_DIR, default ./data).

    events/<symbol>/<YYYY-MM-DD>/{book,trades}.parquet + manifest.json
    quarantine/<source>/<file-digest>/...                (bad raw input, with reason.json)
    bars/<symbol>/<spec12>/<YYYY-MM-DD>.parquet          (sampler output)
    features/<symbol>/<spec12>/<YYYY-MM-DD>.parquet
    slices/<spec12>/<slice_id>.parquet + .manifest.json
    stats/<stats_id>/{mean.npy,sigma.npy,stats.json}
    gx/                                                   (Data Docs HTML)
    reports/<run_id>/...                                  (backtest reports)
    models/                                               (downloaded, verified bundles)
    live/                                                 (journal, decisions, recordings)
    mlflow.db, mlartifacts/                               (embedded MLflow)
    prefect/                                              (PREFECT_HOME for `make run`)
    """

    root: Path

    @staticmethod
    def spec12(spec_hash: str) -> str:
        return spec_hash[:12]

    def events_day(self, symbol: str, day: str) -> Path:
        return self.root / "events" / symbol / day

    def events_symbol(self, symbol: str) -> Path:
        return self.root / "events" / symbol

    def quarantine(self, source: str) -> Path:
        return self.root / "quarantine" / source

    def bars_day(self, symbol: str, spec_hash: str, day: str) -> Path:
        return self.root / "bars" / symbol / self.spec12(spec_hash) / f"{day}.parquet"

    def bars_spec(self, symbol: str, spec_hash: str) -> Path:
        """The bars of one FeatureSpec (`build_bars`: an index per day range, `days/`)."""
        return self.root / "bars" / symbol / self.spec12(spec_hash)

    def key(self, path: Path) -> str:
        """`path` relative to the root, '/'-separated: its key under an object store's
        URL (the store holds the data folder's layout)."""
        return path.relative_to(self.root).as_posix()

    def features_day(self, symbol: str, spec_hash: str, day: str) -> Path:
        return self.root / "features" / symbol / self.spec12(spec_hash) / f"{day}.parquet"

    @property
    def slices_root(self) -> Path:
        """One folder per FeatureSpec under it (`slices`)."""
        return self.root / "slices"

    def slices(self, spec_hash: str) -> Path:
        return self.slices_root / self.spec12(spec_hash)

    def stats(self, stats_id: str) -> Path:
        return self.root / "stats" / stats_id

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    def reports(self, run_id: str) -> Path:
        return self.root / "reports" / run_id

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def live(self) -> Path:
        return self.root / "live"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"
