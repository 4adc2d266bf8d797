"""``hive bench``: throughput benchmarks that write a JSON report."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer


def _bench_dir(name: str) -> Path:
    """``HIVE_HOME/bench/<name>``, emptied: a run never meets an earlier run's files there."""
    from hive.bench.fleet import fresh_workdir
    from hive.config import HiveSettings

    workdir = HiveSettings().home / "bench" / name
    fresh_workdir(workdir)
    return workdir


def _write_report(path: Path, text: str) -> None:
    """Writes one report file; a path that cannot be written is a clear error and exit code 1."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        typer.echo(f"cannot write the report to {path}: {err}", err=True)
        raise typer.Exit(1) from err


class DistillTuning(StrEnum):
    """How the bench's round tunes the core (``DistillParams.tuning``)."""

    auto = "auto"
    full = "full"
    lora = "lora"


class DistillTeacher(StrEnum):
    """Whose signals the core's KD follows (``DistillParams.teacher``)."""

    streamed = "streamed"
    latest = "latest"


app = typer.Typer(help="Measure the hive's throughput; each command writes a JSON report.", no_args_is_help=True)


@app.command("distill")
def distill(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON."),
    model: str = typer.Option(
        "tiny",
        help="The model both arms train: tiny, smollm2-135m (after `hive model prepare smollm2-135m`) or a local "
        "core directory, resolved as HIVE_MODEL__PATH is.",
    ),
    steps: int | None = typer.Option(None, min=1, help="Training steps in each arm [default: 200 on tiny, else 30]."),
    nproc: int = typer.Option(2, min=1, help="DeepSpeed ranks; the plain loop gets as many torch threads."),
    batch_size: int | None = typer.Option(
        None, min=1, help="Global batch size in both arms [default: 64 on tiny, else 8]."
    ),
    lr: float | None = typer.Option(None, help="Peak learning rate in both arms [default: 3e-3 on tiny, else 3e-5]."),
    ds_config: str = typer.Option("zero2_cpu.yaml", help="DeepSpeed config: a file, or a name under distill/configs/."),
    plain_threads: int | None = typer.Option(None, help="Torch threads of the plain loop [default: --nproc]."),
    tuning: DistillTuning = typer.Option(
        DistillTuning.auto,
        help="full: every weight trains; lora: a LoRA adapter on the core trains, merged into the release; "
        "auto: lora on a pretrained model, full on tiny.",
    ),
) -> None:
    """DeepSpeed's distill step against a plain PyTorch loop: same model, data, loss and schedule; tokens/s and the
    fraction of this CPU's peak matmul FLOP/s that each reaches."""
    # Imported here so that `hive --help` stays fast: the bench loads torch and transformers.
    from agents.core_files import CoreDirError
    from hive.bench.distill_bench import BenchError, DistillBenchPlan, run_distill_bench, summary_line
    from hive.config import HiveSettings
    from hive.cores.pretrained import ModelSourceError

    try:
        plan = DistillBenchPlan.for_model(
            model,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            nproc=nproc,
            ds_config=ds_config,
            plain_threads=plain_threads,
            distill_params={"tuning": tuning.value},
        )
    except ValueError as err:
        typer.echo(f"invalid benchmark: {err}", err=True)
        raise typer.Exit(2) from err
    settings = HiveSettings()
    directory = settings.home / "bench" / "distill"
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    try:
        report = run_distill_bench(directory, plan, say, settings.model_cache_dir)
    except (ModelSourceError, CoreDirError) as err:
        typer.echo(f"invalid --model: {err}", err=True)
        raise typer.Exit(2) from err
    except BenchError as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    typer.echo(summary_line(report), err=True)


@app.command("fleet")
def fleet(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON (the HTML goes beside it)."),
    skills: list[str] = typer.Option(
        [],
        "--skill",
        help="A skill for one specialist (repeatable): a built-in name or module:attr. "
        "Default: capital, zorbish, swap, next.",
    ),
    rounds: int = typer.Option(3, min=1, help="Rounds over which the skills arrive (continual setting)."),
    model: str = typer.Option(
        "tiny",
        help="Core v0: tiny (pretrained here on base skills first) or a pretrained model as HIVE_MODEL__PATH names "
        "one (smollm2-135m, a directory); on a pretrained model every arm tunes LoRA.",
    ),
    specialist_steps: int | None = typer.Option(
        None, min=1, help="On-the-job learning steps per specialist [default: tiny 200, pretrained 60]."
    ),
    distill_steps: int | None = typer.Option(
        None, min=1, help="Distillation steps per round [default: tiny 200, pretrained 120]."
    ),
    batch_size: int | None = typer.Option(
        None,
        min=1,
        help="Rows per step of every arm: specialists, the core's rounds (replay rows on top), multitask "
        "[default: tiny 32, pretrained 8].",
    ),
    kd_compare: int = typer.Option(
        0, min=0, help="Learnings per skill in the top-k vs full-KD comparison (e.g. 800); 0 skips it."
    ),
    seeds: int = typer.Option(3, min=1, help="Seeds: every figure is the mean and sample sd over them."),
    base_steps: int | None = typer.Option(
        None,
        min=0,
        help="Steps pretraining the tiny base on skills no arm is evaluated on; 0: random init [default: tiny 600; "
        "a pretrained model is its own base].",
    ),
    ablations: bool | None = typer.Option(
        None,
        help="Also run the core with KD only (ce_weight=0) and CE only (kd_weight=0) [default: on for tiny, off "
        "for a pretrained model].",
    ),
    kd_compare_steps: int = typer.Option(800, min=1, help="Distill steps of each KD comparison round."),
    kd_variants: list[str] = typer.Option(
        [],
        "--kd-variant",
        help="A further KD comparison arm (repeatable): top32, top64, top16-renorm (no residual bucket), top16-t2 "
        "(temperature 2), or combined, e.g. top32-renorm-t2.",
    ),
    tune: bool = typer.Option(
        False, help="First pick the core's replay size and continual lr on validation prompts (4 more core runs)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Keep each seed's figures as it ends (HIVE_HOME/bench/fleet/seed<N>/run.json) and read back the seeds "
        "already measured under the same settings, so that a run stopped midway goes on from its last whole seed.",
    ),
    teacher: DistillTeacher = typer.Option(
        DistillTeacher.streamed,
        help="Whose signals the core's KD follows: streamed (each learning's own, made while the agent learned) "
        "or latest (every learning re-scored by its agent's final specialist); HIVE_DISTILL__TEACHER.",
    ),
) -> None:
    """The distilled core against its specialists, weight merging and multitask training, on held-out tasks."""
    # Imported here so that `hive --help` stays fast: the bench loads torch, transformers and mlflow.
    from agents.core_files import CoreDirError
    from agents.skills import SkillLoadError
    from hive.bench.fleet import DEFAULT_SKILLS, FleetBenchPlan, run_fleet_bench
    from hive.bench.html_report import goal_rows, render_html
    from hive.bench.tracking import log_bench_run
    from hive.config import HiveSettings
    from hive.cores.pretrained import ModelSourceError

    settings = HiveSettings()
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    try:
        given = {
            "specialist_steps": specialist_steps,
            "batch_size": batch_size,
            "base_steps": base_steps,
            "ablations": ablations,
        }
        plan = FleetBenchPlan.for_model(
            model,
            distill={"teacher": teacher.value} | ({} if distill_steps is None else {"steps": distill_steps}),
            skills=skills or list(DEFAULT_SKILLS),
            rounds=rounds,
            kd_compare_per_skill=kd_compare,
            kd_compare_steps=kd_compare_steps,
            seeds=seeds,
            tune=tune,
            kd_variants=tuple(kd_variants),
            **{k: v for k, v in given.items() if v is not None},
        )
        report = run_fleet_bench(plan, settings.home / "bench" / "fleet", say, settings.model_cache_dir, resume=resume)
    except (ModelSourceError, CoreDirError) as err:
        typer.echo(f"invalid --model: {err}", err=True)
        raise typer.Exit(2) from err
    except (SkillLoadError, ValueError) as err:
        typer.echo(f"invalid benchmark: {err}", err=True)
        raise typer.Exit(2) from err
    html_path = json_path.with_suffix(".html")
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    _write_report(html_path, render_html(report))
    run_id = log_bench_run(settings, "fleet", report, [json_path, html_path])
    for key, target, value, met, _ in goal_rows(report):
        shown = "n/a" if value is None else f"{value:.3f}"
        say(f"{key:24s} {shown:>8s}  goal {target:8s} {'' if met is None else ('met' if met else 'MISSED')}")
    say(f"report: {json_path} and {html_path}; MLflow run {run_id}")


@app.command("ingest")
def ingest(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON."),
    count: int = typer.Option(5000, min=1, help="Learnings each arm moves."),
    repeats: int = typer.Option(5, min=1, help="Runs of each arm, alternated (raw, hive, raw, ...): median ratio."),
    bootstrap: str | None = typer.Option(
        None, help="Kafka host:port[,...] [default: HIVE_KAFKA_BOOTSTRAP, else an embedded broker for the run]."
    ),
    profile: bool = typer.Option(
        False, help="Run the hive arm's ingest under cProfile (slower); top 25 cumulative to PATH.profile.txt."
    ),
) -> None:
    """End-to-end ingest (produce to durable store) against raw kafka-python on the same bytes; learnings/s."""
    # Imported here so that `hive --help` stays fast: the bench loads the Kafka clients and pyarrow.
    from hive.bench.ingest_arms import BenchError
    from hive.bench.ingest_bench import IngestBenchPlan, run_ingest_bench, summary_line
    from streams.config import KafkaSettings

    try:
        plan = IngestBenchPlan(count=count, repeats=repeats)
    except ValueError as err:
        typer.echo(f"invalid benchmark: {err}", err=True)
        raise typer.Exit(2) from err
    servers = bootstrap if bootstrap is not None else KafkaSettings().bootstrap
    try:
        report = run_ingest_bench(
            plan,
            servers,
            lambda message: typer.echo(message, err=True),
            json_path.with_name(json_path.name + ".profile.txt") if profile else None,
        )
    except BenchError as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    typer.echo(summary_line(report), err=True)


@app.command("fuzz")
def fuzz(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON."),
    good: int = typer.Option(400, min=1, help="Good signed learnings among the poison."),
    poison: int = typer.Option(10_000, min=0, help="Hostile messages: every class, evenly."),
    seed: int = typer.Option(0, help="Seed of every generated byte."),
    timeout_s: float = typer.Option(1800.0, min=1, help="Limit for ingesting the traffic, and for the round."),
) -> None:
    """A real `hive serve` fed POISON hostile messages among GOOD signed learnings: each one stored once or
    dead-lettered with a reason, the service up throughout, then a round that releases every good learning."""
    # Imported here so that `hive --help` stays fast: the bench loads the Kafka clients and torch.
    from hive.bench.fuzz import run_fuzz, summary_line
    from hive.bench.fuzz_checks import FuzzError
    from hive.bench.poison import PoisonPlan
    from hive.config import HiveSettings

    plan = PoisonPlan(good=good, poison=poison, seed=seed)
    workdir = HiveSettings().home / "bench" / "fuzz"
    try:
        report = run_fuzz(plan, workdir, lambda message: typer.echo(message, err=True), timeout_s=timeout_s)
    except FuzzError as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    typer.echo(summary_line(report), err=True)


@app.command("soak")
def soak(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON."),
    agents: int = typer.Option(50, min=2, help="SDK agents (a tenth more join in phase 2, a tenth leave in 3)."),
    rounds: int = typer.Option(5, min=3, help="Phases, each ended by a round."),
    per_agent: int = typer.Option(40, min=1, help="Learnings each agent publishes per phase."),
    distill_steps: int = typer.Option(30, min=1, help="Distill steps per round."),
    seed: int = typer.Option(0, help="Seed of the learnings' prompts."),
    phase_timeout_s: float = typer.Option(900.0, min=1, help="Limit for one phase: its learnings in, its round ended."),
) -> None:
    """A real `hive serve` against many SDK agents publishing precomputed learnings over several rounds, agents
    joining and leaving: sent, stored, duplicates, rounds released, ingest lag, round overhead and the hive's RSS."""
    # Imported here so that `hive --help` stays fast: the bench loads the Kafka clients and torch.

    from hive.bench.soak import SoakError, SoakPlan, run_soak

    try:
        plan = SoakPlan(agents, rounds, per_agent, distill_steps, seed=seed, phase_timeout_s=phase_timeout_s)
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    workdir = _bench_dir("soak")
    try:
        report = run_soak(plan, workdir, lambda message: typer.echo(message, err=True))
    except SoakError as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    lag = report["ingest_lag_s"]
    typer.echo(
        f"sent {report['sent']}, stored {report['stored']}, duplicates {report['duplicates']}, lost {report['lost']}; "
        f"{report['rounds_released']} rounds released; ingest lag p50 {lag['p50']} s, p99 {lag['p99']} s; "
        f"round overhead {report['round_overhead']['mean']}; RSS max {max(report['rss_mb'], default=0):.0f} MB; "
        f"{report['wall_s']:.0f} s",
        err=True,
    )


@app.command("poisoner")
def poisoner(
    json_path: Path = typer.Option(..., "--json", help="Where to write the report JSON."),
    seeds: int = typer.Option(3, min=1, help="Seeds: every figure is the mean and sample sd over them."),
    seed: int = typer.Option(0, help="The first seed."),
    learnings: int = typer.Option(160, min=1, help="Learnings per agent, the poisoner's included."),
    distill_steps: int = typer.Option(80, min=1, help="Distill steps of each round."),
    base_steps: int = typer.Option(400, min=1, help="Steps teaching core v1 the skills the fleet already knows."),
) -> None:
    """One of five agents, with a valid key, teaches confident wrong answers of a skill the core knows: the same
    round clean, with the hive's screen, and without it; the honest skills' drop and what the screen left out."""
    # Imported here so that `hive --help` stays fast: the bench loads torch and DeepSpeed's launcher.

    from hive.bench.poisoner import PoisonerPlan, run_poisoner, summary_line
    from hive.rounds.book import RoundFailed

    try:
        plan = PoisonerPlan(
            seeds=seeds, seed=seed, learnings=learnings, distill_steps=distill_steps, base_steps=base_steps
        )
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    workdir = _bench_dir("poisoner")
    try:
        report = run_poisoner(plan, workdir, lambda message: typer.echo(message, err=True))
    except RoundFailed as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    _write_report(json_path, json.dumps(report, indent=2) + "\n")
    typer.echo(summary_line(report), err=True)
