"""`jobmanager`: one command for the services, the schema, configuration and events.

Each subcommand builds its settings from the environment when it starts and passes them on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from jobmanager.cli.broker import broker_permissions
from jobmanager.core.runtime import Unavailable

app = typer.Typer(
    help="Job Manager: Channel Manager events become sequenced, retried, audited script runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def article(word: str) -> str:
    """ "a" or "an" before `word` (by its first letter: enough for our role names)."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (Unavailable, ValueError) as exc:  # a service that does not answer; refused input
        _fail(str(exc))


@app.command()
def check() -> None:
    """Check that RabbitMQ and Postgres answer at the configured URLs and accept our
    credentials: one line per service."""
    from jobmanager.core.broker import connect
    from jobmanager.core.config import DatabaseSettings, redact_url
    from jobmanager.store.db import check as check_database

    settings = DatabaseSettings()

    async def probe() -> tuple[list[str], list[str]]:
        answers: list[str] = []
        problems: list[str] = []
        try:
            await (await connect(settings.amqp_url, name="jobmanager-check", timeout=5)).close()
            answers.append(f"RabbitMQ answers at {redact_url(settings.amqp_url)}")
        except Unavailable as exc:
            problems.append(str(exc))
        try:
            await check_database(settings.database_url)
            answers.append(f"PostgreSQL answers at {redact_url(settings.database_url)}")
        except Unavailable as exc:
            problems.append(str(exc))
        return answers, problems

    answers, problems = asyncio.run(probe())
    for answer in answers:
        typer.echo(answer)
    for problem in problems:
        typer.secho(f"error: {problem}", fg="red", err=True)
    if problems:
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Create the database if it does not exist, and upgrade its schema to the latest."""
    from jobmanager.core.config import DatabaseSettings, redact_url
    from jobmanager.store.migrate import upgrade

    settings = DatabaseSettings()
    try:
        upgrade(settings.database_url)
    except Unavailable as exc:
        _fail(str(exc))
    typer.echo(f"schema is up to date at {redact_url(settings.database_url)}")


@app.command()
def matcher() -> None:
    """Run the trigger-matcher (events, gate, results) in the foreground."""
    from jobmanager.matcher.__main__ import main

    raise typer.Exit(main())


@app.command()
def executor(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="scripts run at once (default 4)")
    ] = None,
) -> None:
    """Run one executor in the foreground (SIGTERM: finish the runs in flight, then exit)."""
    from jobmanager.executor.__main__ import main

    raise typer.Exit(main([] if concurrency is None else ["--concurrency", str(concurrency)]))


@app.command()
def admin() -> None:
    """Run the admin service (the API and the web console) in the foreground."""
    from jobmanager.admin.__main__ import main

    raise typer.Exit(main())


apikey_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="viewer, operator or admin")],
    name: Annotated[str | None, typer.Option(help="who or what uses it (audit log)")] = None,
) -> None:
    """Create an API key and print it (the last word on stdout); only its hash is stored."""
    from jobmanager.cli.keys import create

    if role not in ("viewer", "operator", "admin"):
        _fail(f"--role must be viewer, operator or admin, not {role!r}")
    key = _run(create(role=role, name=name or f"{role}-key"))
    typer.echo(f"created {article(role)} {role} key: {key}")


@apikey_app.command("list")
def apikey_list() -> None:
    """Every API key: id, name, role, prefix, when made and last used, whether revoked."""
    from jobmanager.cli.keys import all_keys

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value is not None else "never"

    rows = _run(all_keys())
    if not rows:
        typer.echo("no API keys yet (`jobmanager apikey create --role ROLE` makes one)")
        return
    table = [("id", "name", "role", "prefix", "created", "last used", "state")]
    for row in rows:
        state = f"revoked {when(row.revoked_at)}" if row.revoked_at else "active"
        table.append(
            (
                str(row.id),
                row.name,
                row.role,
                f"{row.prefix}…",
                when(row.created_at),
                when(row.last_used_at),
                state,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="from `apikey list`")],
) -> None:
    """Revoke an API key: it is refused from now on (written to the audit log)."""
    from jobmanager.cli.keys import UnknownKey, revoke

    try:
        name = _run(revoke(key_id))
    except UnknownKey as exc:
        _fail(str(exc))
    typer.echo(f"revoked key {key_id} ({name})")


@app.command()
def status() -> None:
    """The four tables' counts, lanes, executors and dead letters, from the database and the
    broker (no running admin needed)."""
    from jobmanager.admin.config import AdminSettings
    from jobmanager.cli.status import status as report
    from jobmanager.core.runtime import load_settings

    typer.echo(_run(report(load_settings(AdminSettings, "status"))))


@app.command()
def up(
    executors: Annotated[int, typer.Option(min=0, help="executor processes")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, help="scripts per executor")] = 4,
    admin: Annotated[bool, typer.Option(help="run the admin API too")] = True,
) -> None:
    """Run every service in one process tree (development). Ctrl-C stops them all."""
    from jobmanager.cli.up import Services

    services = Services(executors=executors, concurrency=concurrency, admin=admin)
    raise typer.Exit(services.run_until_stopped())


@app.command()
def demo(
    rate: Annotated[float, typer.Option(min=0.1, help="simulated events per second")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: Ctrl-C)")
    ] = None,
) -> None:
    """Services + sample jobs + a simulated Channel Manager + a live view of the tables."""
    from jobmanager.cli.demo import run_demo

    raise typer.Exit(run_demo(rate=rate, duration=duration))


@app.command()
def apply(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    prune: Annotated[bool, typer.Option(help="delete jobs that are not in the file")] = False,
) -> None:
    """Apply a YAML file of settings and jobs (idempotent; keyed by job name)."""
    from jobmanager.cli.apply import ApplyError, apply_file

    try:
        report = _run(apply_file(file, prune=prune))
    except ApplyError as exc:
        _fail(str(exc))
    typer.echo(report)


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. channel.updated")],
    data: Annotated[str, typer.Option(help="the event's data, a JSON object")] = "{}",
    event_id: Annotated[str | None, typer.Option(help="default: a new UUID")] = None,
    source: Annotated[str, typer.Option()] = "channel-manager",
) -> None:
    """Send one event to the Channel Manager exchange."""
    from jobmanager.cli.events import publish_one

    try:
        payload = json.loads(data)
    except ValueError as exc:
        _fail(f"--data is not JSON: {exc}")
    if not isinstance(payload, dict):
        _fail("--data must be a JSON object")
    sent = _run(publish_one(event_type, payload, event_id=event_id, source=source))
    typer.echo(f"published {event_type} {sent}")


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(min=0.01, help="events per second")] = 2.0,
    count: Annotated[int | None, typer.Option(min=1, help="stop after N events")] = None,
    channels: Annotated[int, typer.Option(min=1, help="distinct channels")] = 12,
    seed: Annotated[int | None, typer.Option(help="for a repeatable stream")] = None,
) -> None:
    """Publish a stream of realistic Channel Manager events."""
    from jobmanager.cli.events import simulate as run_simulation

    sent = _run(run_simulation(rate=rate, count=count, channels=channels, seed=seed))
    typer.echo(f"published {sent} event(s)")


OutputFile = Annotated[Path | None, typer.Option(help="write it here instead of to stdout")]


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


@app.command()
def asyncapi(output: OutputFile = None) -> None:
    """The AsyncAPI 3 document of the AMQP contract, generated from the message models."""
    from jobmanager.cli.asyncapi import render

    _emit(render(), output)


@app.command("config-reference")
def config_reference(output: OutputFile = None) -> None:
    """The configuration reference (Markdown), generated from the settings classes."""
    from jobmanager.cli.reference import render

    _emit(render(), output)


app.command("broker-permissions")(broker_permissions)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
