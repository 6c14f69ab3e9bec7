"""deploy/Dockerfile: one slim, non-root image per service, installed from the lock file."""

from __future__ import annotations

import re

import pytest
from deployfiles import (
    ALL_INTERFACES,
    DOCKERIGNORE,
    INIT,
    READERS,
    ROOT,
    TARGETS,
    check_environment,
    dockerfile,
    image_base,
    image_command,
    image_env,
    image_user,
    reader,
    workspace_packages,
)

PACKAGES = {
    "matcher": "jobmanager-matcher",
    "executor": "jobmanager-executor",
    "admin": "jobmanager-admin",
    "cli": "jobmanager",
}


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_slim_python_as_an_unprivileged_user(target: str) -> None:
    assert target in dockerfile(), f"no stage {target!r}"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image_base(target)), image_base(target)
    user = image_user(target).split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{target} runs as {user!r}"


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_installs_its_workspace_member_from_the_lock_file(target: str) -> None:
    build = dockerfile()[f"build-{target}"]
    package = PACKAGES[target]
    assert package in workspace_packages()
    syncs = [args for args in build.all("RUN") if "uv sync" in args]
    assert syncs, f"build-{target} does not run uv sync"
    for args in syncs:
        words = args.split()
        assert {"--frozen", "--no-dev"} <= set(words), f"not from the lock file: {args}"
        assert words[words.index("--package") + 1] == package, args
    # The final sync installs the code itself, as wheels: the image needs no source tree.
    assert "--no-editable" in syncs[-1].split()
    copies = " ".join(dockerfile()[target].all("COPY"))
    assert f"--from=build-{target} /app/.venv /app/.venv" in copies


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_a_real_program_behind_tini(target: str) -> None:
    entrypoint, cmd = image_command(target)
    argv = entrypoint + cmd
    assert argv[: len(INIT)] == INIT, "tini must be PID 1 (signals, orphaned script processes)"
    program = reader(argv) if target != "cli" else reader([*entrypoint, "migrate"])
    assert program == target


@pytest.mark.parametrize("target", TARGETS)
def test_image_environment_holds_only_real_settings(target: str) -> None:
    check_environment(list(image_env(target)), target, f"Dockerfile target {target}")


def test_the_executor_image_ships_the_scripts_where_its_setting_points() -> None:
    env = image_env("executor")
    copies = dockerfile()["executor"].all("COPY")
    assert f"scripts {env['JOBMANAGER_SCRIPTS_DIR']}" in copies
    assert image_env("admin")["JOBMANAGER_ADMIN_HOST"] == ALL_INTERFACES
    assert "JOBMANAGER_ADMIN_PORT" in image_env("admin")
    assert set(READERS) == set(TARGETS)


def test_the_build_context_lets_in_everything_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in DOCKERIGNORE.read_text().splitlines(), ".dockerignore should be an allow-list"
    for stage in dockerfile().values():
        for args in stage.all("COPY"):
            words = args.split()
            if any(w.startswith("--from") for w in words):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                top = source.split("/")[0]
                assert top in allowed, f"COPY {source}: excluded by .dockerignore"
