"""The hive's settings: one typed object, read once from ``HIVE_*`` variables."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from distill.manifest import DistillParams
from streams.config import KafkaSettings
from streams.signing import parse_keys


class DistillSettings(DistillParams):
    """How a round distills (``HIVE_DISTILL__*``): the manifest's ``DistillParams``, whose defaults are the hive's,
    plus the learning rate of the rounds after the first."""

    # A core that earlier rounds already taught is tuned gently: at 3e-3 a later round made it forget
    # up to 0.17 of an earlier skill, at 1e-3 at most 0.01 (hive bench fleet, docs/benchmarks.md).
    continual_lr: float = Field(default=1e-3, gt=0)
    # Training already weighs every agent of a round alike (distill.dataset.BalancedSampler picks an agent, then one
    # of its learnings), and agent ids are authenticated by their keys, so volume buys no weight. Below 1, no agent
    # may also be more than this share of a round's learnings or of its replay pool: past it, a seeded sample of its
    # own is kept and the rest are never trained on (hive.rounds.share). Off by default: in the network test, an
    # agent that started a little later cut a first round of 448 learnings to 17.
    max_agent_share: float = Field(default=1.0, gt=0, le=1)

    def for_round(self, first: bool) -> dict:
        """The manifest's distill block: the first round from a fresh core learns at ``lr``, later ones at
        ``continual_lr``."""
        params = self.model_dump(exclude={"continual_lr", "max_agent_share"})
        params["lr"] = self.lr if first else self.continual_lr
        return params


class IngestSettings(BaseModel):
    """Who may send learnings and heartbeats, and how they must be signed (``HIVE_INGEST__*``).

    Authentication fails closed. An agent's keys are given inline in ``agent_keys`` or as a file
    ``<agent_key_dir>/<agent id>.key`` (one key per line; any of them verifies), and every learning and
    heartbeat of that agent must be signed with one of them (``streams.signing``). With ``require_signatures``
    (the default) an agent without a key is refused as ``unsigned``; without it, its learnings are accepted
    and counted as unsigned. An agent in ``revoked_agents`` is refused as ``revoked`` whatever it signs.
    With ``allowed_agents`` set, any other agent is refused as ``unknown_agent``. The fleet view applies the
    same rules to heartbeats.
    """

    # A refused value is not echoed in the error: it may be a key.
    model_config = ConfigDict(hide_input_in_errors=True)

    # agent id -> key, as hex or UTF-8 text ("hex:..."/"utf8:..." to say which; several keys one per line during
    # a rotation); secret, so kept out of reprs. Each key is at least 16 bytes (streams.signing.MIN_KEY_BYTES).
    agent_keys: dict[str, SecretStr] = Field(default_factory=dict)
    agent_key_dir: Path | None = None
    # None: any agent may send; a list (even an empty one) admits only the agents named.
    allowed_agents: list[str] | None = None
    # False admits learnings and heartbeats from agents that have no key, unverified (a trusted network only).
    require_signatures: bool = True
    # Agents whose learnings and heartbeats are refused even when correctly signed.
    revoked_agents: list[str] = Field(default_factory=list)
    # A heartbeat sent further than this in the future (by the hive's clock) is refused: it would otherwise
    # keep its agent "active" long after it stopped.
    max_clock_skew_s: float = Field(default=300.0, ge=0)

    @field_validator("agent_keys")
    @classmethod
    def _usable_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Refused when the settings are read, so that every command exits 2 naming the agent, not the key.
        for agent_id, secret in keys.items():
            try:
                parse_keys(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"signing key for agent {agent_id!r} is invalid: {exc}") from None
        return keys


class ScheduleSettings(BaseModel):
    """When ``hive serve`` opens a round by itself (``HIVE_SCHEDULE__*``): as soon as any trigger fires.

    A trigger set to 0 is off. ``manual`` turns every trigger off: rounds then run only through
    ``hive round run``. No trigger opens a round without at least one new learning.
    """

    manual: bool = False
    # At least this many learnings arrived since the last round took its share.
    min_new: int = Field(default=1500, ge=0)
    # This long since the last round opened (or since the oldest new learning, before the first round).
    every_s: float = Field(default=0.0, ge=0)
    # Every active agent has at least this many new learnings.
    min_per_agent: int = Field(default=0, ge=0)
    # The oldest new learning (by its created_at) waits longer than this for a round.
    max_staleness_s: float = Field(default=0.0, ge=0)
    # An agent is active while its newest heartbeat is younger than this.
    active_s: float = Field(default=300.0, gt=0)
    # How often an interrupted round may be resumed before it is failed for good.
    max_resumes: int = Field(default=2, ge=0)
    # After this many failed rounds in a row over the same learnings, no round opens over them by itself
    # until `hive round skip` moves past them (0: never stop trying).
    max_failed_rounds: int = Field(default=3, ge=0)


class AdapterSettings(BaseModel):
    """Which adapter claim checks a round's distill job may follow (``HIVE_ADAPTERS__*``).

    A learning's claim check names a directory on the hive's machine; the job loads it only when it lies
    under one of ``roots`` (symlinks resolved first). ``roots`` unset means ``HIVE_HOME/agents``, where the
    agents that ``hive demo`` starts save their specialists. ``max_bytes`` caps the weights file read; unset,
    it is four times the base core's weights file.
    """

    roots: list[Path] | None = None
    max_bytes: int | None = Field(default=None, gt=0)


class ModelSettings(BaseModel):
    """Which model core v0 is (``HIVE_MODEL__*``), read when a new hive builds its first core.

    ``path`` is a built-in name, ``tiny`` (a 1 M-parameter Llama built from a config, the fast default) or
    ``smollm2-135m`` (prepared once by ``hive model prepare smollm2-135m``), or a local directory holding a
    transformers causal LM in safetensors (``agents.core_files.check_core_dir`` says what is refused).
    """

    path: str = Field(default="tiny", min_length=1)


class CoreTransportSettings(BaseModel):
    """How agents on other hosts reach released cores (``HIVE_CORES__*``; docs/operator-guide.md).

    ``base_url`` unset: releases name ``file://`` directories under ``HIVE_HOME/cores``, for agents on this host.
    ``http(s)://host:port``: releases name ``<base_url>/cores/v<N>/``, which the hive's core server answers
    (``hive serve`` with ``listen`` set, or ``hive core serve``). ``s3://bucket/prefix``: the hive uploads each
    core and its manifest to ``<base_url>/v<N>/`` before releasing it, on ``s3_endpoint_url`` (unset: AWS, or
    ``AWS_ENDPOINT_URL``). ``tls_cert_file`` and ``tls_key_file`` (PEM) make the core server speak HTTPS.
    """

    base_url: str | None = None
    listen: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    s3_endpoint_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("http", "https", "s3") or "?" in url or "#" in url or len(url) > 1024:
            raise ValueError(f"{url[:200]!r}: must be an http://, https:// or s3:// URL without a query or fragment")
        return url.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is None or listen == "":
            return None
        listen_address(listen)
        return listen

    @model_validator(mode="after")
    def _tls_pair(self) -> CoreTransportSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("HIVE_CORES__TLS_CERT_FILE and HIVE_CORES__TLS_KEY_FILE go together")
        return self


def listen_address(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as a pair; ValueError names what is wrong."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r}: expected host:port")
    return host.strip("[]"), int(port)


# The seed `hive inspect` draws held-out tasks with when the gate's is secret: researchers compare cores on fixed,
# public tasks; the gate asks each round its own (hive.rounds.gate_seed).
INSPECT_EVAL_SEED = 10_000


class GateSettings(BaseModel):
    """The release gate (``HIVE_GATE__*``): no skill of the candidate may fall more than ``max_regression`` below
    the champion's, on ``eval_tasks`` test tasks per skill.

    ``eval_seed`` unset: each round draws its tasks with a secret seed of its own (HMAC of ``HIVE_HOME/gate-secret``
    and the round id), so that no agent can know, or tune for, which test tasks the gate will ask; set: that fixed
    seed for every round (reproducible gates, for benchmarks and tests).
    """

    max_regression: float = 0.02
    eval_tasks: int = 100
    eval_seed: int | None = None

    @property
    def inspect_seed(self) -> int:
        """The seed ``hive inspect`` uses: the fixed ``eval_seed``, or the public ``INSPECT_EVAL_SEED``."""
        return self.eval_seed if self.eval_seed is not None else INSPECT_EVAL_SEED


class MlflowSettings(BaseModel):
    """Where runs and cores are tracked (``HIVE_MLFLOW__*``). Unset, MLflow runs on ``HIVE_HOME/mlflow.db`` with
    artifacts in ``HIVE_HOME/mlartifacts``; set, an MLflow tracking server (``http(s)://``, or a database URI)
    holds the runs, and the registry too unless ``registry_uri`` names another. The server decides where
    artifacts go (its ``--artifacts-destination``)."""

    model_config = ConfigDict(extra="ignore")

    tracking_uri: str | None = None
    registry_uri: str | None = None

    @model_validator(mode="after")
    def _registry_needs_tracking(self) -> MlflowSettings:
        if self.registry_uri and not self.tracking_uri:
            raise ValueError(
                "HIVE_MLFLOW__REGISTRY_URI needs HIVE_MLFLOW__TRACKING_URI: the runs and the cores go together"
            )
        return self


class HiveSettings(BaseSettings):
    """Everything one hive needs; its state lives under ``home`` so a user can see or delete it."""

    # A refused value is not echoed in the error: HIVE_INGEST__AGENT_KEYS holds keys.
    model_config = SettingsConfigDict(
        env_prefix="HIVE_", env_nested_delimiter="__", extra="ignore", hide_input_in_errors=True
    )

    home: Path = Path(".hive")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registered_model: str = "hive-core"
    # Plugin skills (module:attr) the hive may meet in learnings; built-ins need no entry.
    skills: list[str] = Field(default_factory=list)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    distill: DistillSettings = Field(default_factory=DistillSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    cores: CoreTransportSettings = Field(default_factory=CoreTransportSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    # Where `hive model prepare` keeps converted built-in models (HIVE_MODEL_CACHE); unset, the user's cache.
    model_cache: Path | None = None
    # The Ed25519 private key (PKCS#8 PEM) every core release is signed with (HIVE_RELEASE_KEY_FILE). Unset, the
    # hive makes one under HIVE_HOME/keys on its first release; set, the file must exist.
    release_key_file: Path | None = None

    @property
    def mlflow_db(self) -> Path:
        """The SQLite file of the tracking store and registry; opening the registry creates it."""
        return self.home / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        """The tracking URI: ``HIVE_MLFLOW__TRACKING_URI``, or the SQLite file under ``HIVE_HOME``."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.mlflow_db.resolve()}"

    @property
    def mlflow_registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.mlflow_uri

    @property
    def local_mlflow(self) -> bool:
        """True when MLflow is the SQLite file under HIVE_HOME (no tracking server is configured)."""
        return self.mlflow.tracking_uri is None

    def has_registry(self) -> bool:
        """Whether a core registry may be read without creating one: a tracking server always; the local SQLite
        file once it exists (opening the registry creates it, and a reader must not)."""
        return not self.local_mlflow or self.mlflow_db.is_file()

    @property
    def adapter_roots(self) -> list[Path]:
        """The directories adapter claim checks may point into, resolved: ``HIVE_ADAPTERS__ROOTS`` or
        ``HIVE_HOME/agents``, and ``uploads_dir``."""
        roots = self.adapters.roots if self.adapters.roots is not None else [self.home / "agents"]
        # Specialists agents on other hosts uploaded to the hive (hive.cores.server) are always followed.
        return [root.resolve() for root in [*roots, self.uploads_dir]]

    def adapters_manifest(self) -> dict:
        """The manifest's ``adapters`` block (``distill.manifest.AdapterParams``)."""
        return {"roots": [str(root) for root in self.adapter_roots], "max_bytes": self.adapters.max_bytes}

    @property
    def model_cache_dir(self) -> Path:
        """``HIVE_MODEL_CACHE``, or ``${XDG_CACHE_HOME:-~/.cache}/hive-mind/models``: outside HIVE_HOME, so that
        every hive on the machine shares one converted copy of a built-in model."""
        if self.model_cache is not None:
            return self.model_cache.expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "hive-mind" / "models"

    @property
    def release_key_path(self) -> Path:
        return self.release_key_file if self.release_key_file is not None else self.home / "release-key" / "release.pem"

    @property
    def release_public_key_path(self) -> Path:
        """Where the hive writes its release public key, which agents sharing ``HIVE_HOME`` pin by default."""
        return self.home / "release-key" / "release.pub"

    @property
    def cores_dir(self) -> Path:
        return self.home / "cores"

    @property
    def manifests_dir(self) -> Path:
        """The manifest of every released core (``v<N>.json``): what the core server serves and releases sign."""
        return self.home / "cores" / "manifests"

    @property
    def uploads_dir(self) -> Path:
        """Where the core server keeps the specialists agents upload: ``<agent id>/<sha256>/<file>``."""
        return self.home / "uploads" / "adapters"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def rounds_dir(self) -> Path:
        return self.home / "rounds"


# On loopback, only these Host names are answered: a web page cannot rebind its own DNS name to 127.0.0.1.
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
# As long as the agents' signing keys: a token short enough to guess is no protection for releases.
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback address (127.0.0.0/8, ::1); a name other than ``localhost``
    is not trusted to be one, whatever it resolves to now."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardSettings(BaseSettings):
    """How the dashboard is served (``HIVE_UI_*``; ``hive ui``'s options set them).

    Checked wherever the dashboard is built, ``hive ui`` or uvicorn pointed at ``hive.ui.app:app_from_env``:
    a token must be long enough to be a secret, and actions off loopback need one, since anyone who can
    reach the address could otherwise release cores to the whole fleet.
    """

    model_config = SettingsConfigDict(env_prefix="HIVE_UI_", extra="ignore")

    # The address the server listens on: on a loopback name the app answers only loopback Host headers.
    host: str = "127.0.0.1"
    allow_actions: bool = False
    # The secret every write must carry; empty means none.
    token: str = ""

    @model_validator(mode="after")
    def _safe(self) -> DashboardSettings:
        if self.token and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"--token (HIVE_UI_TOKEN) must be at least {MIN_TOKEN_CHARS} characters")
        if self.allow_actions and not self.token and not is_loopback(self.host):
            raise ValueError(
                f"--allow-actions on {self.host}, which is not a loopback address, needs --token (or HIVE_UI_TOKEN)"
            )
        return self
