"""The core registry: each core is a run's plain safetensors artifacts, registered as an MLflow model version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.model import WEIGHTS_FILE, file_sha256
from hive.cores.registry_db import ensure_database, import_mlflow, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from hive.config import HiveSettings

CORE_ARTIFACT_PATH = "core"
CHAMPION = "champion"
TAG_CORE_VERSION = "core_version"
TAG_SHA256 = "sha256"
TAG_ROUND_ID = "round_id"


class RegistryError(RuntimeError):
    """A registry request that cannot be met: an unknown core version or alias, or a version registered twice."""


class UnknownVersionError(RegistryError):
    """A core version that is not registered: bad input from whoever named it. ``known`` lists the versions
    that are."""

    def __init__(self, message: str, known: list[int]) -> None:
        super().__init__(message)
        self.known = known


class CoreIntegrityError(RegistryError):
    """A core's weights file does not match the sha256 it was (or is about to be) registered with."""


def verify_core(directory: Path, expected_sha256: str) -> None:
    """Raises CoreIntegrityError unless ``directory``'s weights file hashes to ``expected_sha256``."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CoreIntegrityError(f"no {WEIGHTS_FILE} in {directory}")
    actual = file_sha256(weights)
    if actual != expected_sha256:
        raise CoreIntegrityError(
            f"{weights} has sha256 {actual}, but the core was registered with {expected_sha256}: "
            "the file is corrupt or was tampered with; do not load it"
        )


class CoreRegistry:
    """Cores in an MLflow model registry, addressed by the hive's own integer core version.

    MLflow numbers model versions from 1 by itself; the hive numbers cores from 0. The two are joined by
    the ``core_version`` tag of each model version, so a core version MUST be registered at most once.
    Every model version also carries the ``sha256`` of its weights file, and ``download`` checks it.

    ``artifact_root`` is where runs store their files. It defaults to ``mlartifacts`` next to a SQLite
    database, so nothing lands in ``./mlruns``; for a tracking server, None leaves the choice to the server.
    It applies when this registry creates the experiment; an existing experiment keeps its location.
    """

    def __init__(
        self,
        tracking_uri: str,
        model_name: str = "hive-core",
        experiment: str = "hive-cores",
        artifact_root: Path | None = None,
        registry_uri: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.model_name = model_name
        self.experiment = experiment
        db = sqlite_path(tracking_uri)
        if artifact_root is None and db is not None:
            artifact_root = db.parent / "mlartifacts"
        self.artifact_root = artifact_root.resolve() if artifact_root is not None else None
        self._client_cache: MlflowClient | None = None
        self._experiment_id: str | None = None

    @classmethod
    def from_settings(cls, settings: HiveSettings) -> CoreRegistry:
        # A tracking server keeps artifacts where it was told to (its --artifacts-destination); only the local
        # SQLite file needs a place under HIVE_HOME.
        artifact_root = settings.home / "mlartifacts" if settings.local_mlflow else None
        return cls(
            settings.mlflow_uri,
            settings.registered_model,
            artifact_root=artifact_root,
            registry_uri=settings.mlflow_registry_uri,
        )

    # -- writing ---------------------------------------------------------------------------------------

    def log_core(
        self,
        core_dir: Path,
        version: int,
        sha256: str,
        metrics: dict[str, float] | None = None,
        run_id: str | None = None,
        round_id: str | None = None,
    ) -> str:
        """Logs the files of ``core_dir`` under ``core/`` of a run and registers them as core ``version``.

        With ``run_id`` (e.g. the distillation run) the files join that run, which is left open; otherwise
        a new run is created in the registry's experiment and ended. Returns the MLflow model version.
        """
        # Check before anything is written: a sha256 tag that does not match its file would make every
        # later download fail, and a core version registered twice would make the tag join ambiguous.
        verify_core(core_dir, sha256)
        existing = self._model_version(version)
        if existing is not None:
            raise RegistryError(
                f"core version {version} is already registered as {self.model_name} version {existing.version}"
            )
        client = self._client()
        own_run = run_id is None
        if run_id is None:
            run_id = client.create_run(self.experiment_id(), run_name=f"core-v{version}").info.run_id
        status = "FAILED"
        try:
            for path in sorted(core_dir.iterdir()):
                # Only the top-level files: a core directory's subfolders (checkpoints) are not the core.
                if path.is_file():
                    client.log_artifact(run_id, str(path), artifact_path=CORE_ARTIFACT_PATH)
            self._log_run_data(client, run_id, version, sha256, metrics, round_id)
            self._ensure_registered_model(client)
            tags = {TAG_CORE_VERSION: str(version), TAG_SHA256: sha256}
            if round_id is not None:
                tags[TAG_ROUND_ID] = round_id
            source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{CORE_ARTIFACT_PATH}"
            mv = client.create_model_version(self.model_name, source=source, run_id=run_id, tags=tags)
            status = "FINISHED"
        finally:
            if own_run:
                client.set_terminated(run_id, status)
        return str(mv.version)

    def set_alias(self, alias: str, core_version: int) -> None:
        """Points ``alias`` (e.g. ``champion``, ``previous``) at core ``core_version``."""
        mv = self._require(core_version)
        self._client().set_registered_model_alias(self.model_name, alias, mv.version)

    def delete_alias(self, alias: str) -> None:
        """Removes ``alias`` from the registered model; an alias that is not set is fine."""
        if alias in self._aliases():
            self._client().delete_registered_model_alias(self.model_name, alias)

    # -- reading ---------------------------------------------------------------------------------------

    def has_version(self, core_version: int) -> bool:
        """True when core ``core_version`` is registered."""
        return self._model_version(core_version) is not None

    def registered_sha256(self, core_version: int) -> str:
        """The sha256 core ``core_version`` was registered with; UnknownVersionError when it is not registered."""
        sha = self._require(core_version).tags.get(TAG_SHA256)
        if not sha:
            raise RegistryError(f"core v{core_version} has no sha256 tag in {self.model_name}")
        return str(sha)

    def champion_version(self) -> int | None:
        return self.alias_version(CHAMPION)

    def alias_version(self, alias: str) -> int | None:
        """The core version ``alias`` points at, or None when the alias (or the registered model) is unset."""
        mlflow_version = self._aliases().get(alias)
        if mlflow_version is None:
            return None
        mv = self._client().get_model_version(self.model_name, mlflow_version)
        return _core_version(mv)

    def download(self, alias_or_version: str | int, dst: Path) -> Path:
        """Downloads a core (an alias, or an int core version) under ``dst``; returns the verified directory.

        Raises RegistryError for an unknown alias or version, CoreIntegrityError when the downloaded
        weights do not match the registered sha256.
        """
        mv = self._resolve(alias_or_version)
        client = self._client()
        source = client.get_model_version_download_uri(self.model_name, mv.version)
        # Download from the version's source URI rather than `models:/NAME@alias`: MLflow resolves
        # models:/ URIs with the process-global registry URI (ModelsArtifactRepository._get_model_uri_infos),
        # which is not ours, and by default points at ./mlflow.db.
        mlflow = import_mlflow()
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracking_uri)
        )
        verify_core(local, mv.tags[TAG_SHA256])
        return local

    def list_versions(self) -> list[dict[str, Any]]:
        """Every registered core, oldest first, as plain JSON-ready dicts."""
        # search_model_versions leaves ModelVersion.aliases empty on the SQL store, so aliases come from
        # the registered model, which maps each alias to an MLflow version.
        aliases: dict[str, list[str]] = {}
        for alias, mlflow_version in self._aliases().items():
            aliases.setdefault(str(mlflow_version), []).append(alias)
        rows = []
        for mv in self._model_versions():
            rows.append(
                {
                    "core_version": _core_version(mv),
                    "mlflow_version": str(mv.version),
                    "sha256": mv.tags.get(TAG_SHA256),
                    "aliases": sorted(aliases.get(str(mv.version), [])),
                    "round_id": mv.tags.get(TAG_ROUND_ID),
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
                }
            )
        return rows

    def experiment_id(self) -> str:
        """The id of the registry's experiment, created under ``artifact_root`` when missing.

        A run passed to ``log_core`` should belong to it (or to another experiment with a chosen
        location): a run of MLflow's default experiment keeps its artifacts in ``./mlruns``.
        """
        if self._experiment_id is not None:
            return self._experiment_id
        from mlflow.exceptions import MlflowException

        client = self._client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = self.artifact_root.as_uri() if self.artifact_root is not None else None
            try:
                self._experiment_id = client.create_experiment(self.experiment, artifact_location=location)
                return self._experiment_id
            except MlflowException as err:
                # Another process created it between our lookup and our create: use theirs.
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise RegistryError(f"MLflow experiment {self.experiment!r} exists but cannot be read")
        if exp.lifecycle_stage != "active":
            raise RegistryError(
                f"MLflow experiment {self.experiment!r} is deleted; restore it (`mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}`) or configure another experiment name"
            )
        self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- internals -------------------------------------------------------------------------------------

    def _client(self) -> MlflowClient:
        if self._client_cache is None:
            mlflow = import_mlflow()
            db = sqlite_path(self.tracking_uri)
            if db is not None:
                ensure_database(db)
            self._client_cache = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client_cache

    def _ensure_registered_model(self, client: MlflowClient) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(self.model_name, description="The hive's cognitive core.")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    @staticmethod
    def _log_run_data(
        client: MlflowClient,
        run_id: str,
        version: int,
        sha256: str,
        metrics: dict[str, float] | None,
        round_id: str | None,
    ) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(datetime.now(UTC).timestamp() * 1000)
        tags = [RunTag(TAG_CORE_VERSION, str(version)), RunTag(TAG_SHA256, sha256)]
        if round_id is not None:
            tags.append(RunTag(TAG_ROUND_ID, round_id))
        client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()],
            tags=tags,
        )

    def _aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self._client().get_registered_model(self.model_name).aliases)
        except MlflowException as err:
            # No core registered yet: the registered model does not exist, so no alias is set.
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def _model_versions(self) -> list[ModelVersion]:
        client = self._client()
        # The name is ours (from the settings), but quote it so a stray quote cannot break the filter.
        name = self.model_name.replace("'", "\\'")
        versions: list[ModelVersion] = []
        token = None
        while True:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        return sorted(versions, key=lambda mv: int(mv.version))

    def _model_version(self, core_version: int) -> ModelVersion | None:
        for mv in self._model_versions():
            if _core_version(mv) == core_version:
                return mv
        return None

    def _require(self, core_version: int) -> ModelVersion:
        mv = self._model_version(core_version)
        if mv is None:
            known = sorted(v for row in self.list_versions() if (v := row["core_version"]) is not None)
            raise UnknownVersionError(
                f"core version {core_version} is not registered in {self.model_name}; known: {known}", known
            )
        return mv

    def _resolve(self, alias_or_version: str | int) -> ModelVersion:
        if isinstance(alias_or_version, int):
            return self._require(alias_or_version)
        mlflow_version = self._aliases().get(alias_or_version)
        if mlflow_version is None:
            raise RegistryError(f"alias {alias_or_version!r} is not set on {self.model_name}")
        return self._client().get_model_version(self.model_name, mlflow_version)


def _core_version(mv: ModelVersion) -> int | None:
    value = mv.tags.get(TAG_CORE_VERSION)
    return int(value) if value is not None else None
