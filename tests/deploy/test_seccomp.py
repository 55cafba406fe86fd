"""deploy/seccomp/sandbox.json, the worker's seccomp profile: what it is made of, and that
bubblewrap needs it and works with it in a non-root container (deploy/seccomp/README.md).

- It is exactly `make_profile.py`'s output for the committed Docker default profile, and it
  allows a container without capabilities only the sandbox's rules more than Docker does.
- On a real engine, the Submitter image as uid 10001 with no capability and
  `no-new-privileges`: bwrap with the job sandbox's options fails under Docker's default
  profile, fails under ours with a masked /proc, and runs under ours with
  `systempaths=unconfined`, as uid 65534 seeing only its own processes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from functools import cache
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.conftest import DEPLOY, Engine, Images, run

SECCOMP = DEPLOY / "seccomp"
DOCKER_DEFAULT = SECCOMP / "docker-default-20.10.24.json"
CLONE_NEWUSER = 0x10000000


@cache
def make_profile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_profile", SECCOMP / "make_profile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _allowed(rules: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Syscall -> the argument conditions under which some rule allows it ([] = always)."""
    out: dict[str, list[Any]] = {}
    for rule in rules:
        if rule["action"] != "SCMP_ACT_ALLOW":
            continue
        for name in rule["names"]:
            out.setdefault(name, []).append(rule.get("args") or [])
    return out


def test_profile_is_dockers_default_plus_the_sandbox_rules() -> None:
    make = make_profile()
    docker = json.loads(DOCKER_DEFAULT.read_text())
    text = (SECCOMP / "sandbox.json").read_text()
    assert text == make.render(make.make(docker)), "run make_profile.py (deploy/seccomp/README)"
    profile = json.loads(text)
    # The OCI form: containerd would ignore Docker's conditional keys and allow it all.
    assert set(profile) == {"defaultAction", "architectures", "syscalls"}
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    for rule in profile["syscalls"]:
        assert not {"includes", "excludes"} & set(rule), rule
    assert set(profile["architectures"]) == {
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    }

    ours = [r for r in profile["syscalls"] if r.get("comment", "").startswith(make.PREFIX)]
    theirs = [r for r in profile["syscalls"] if r not in ours]
    # Docker's rules as they apply to a container with no capability, on amd64/arm64.
    docker_no_caps = [r for r in docker["syscalls"] if make._applies(r)]
    assert len(theirs) == len(docker_no_caps)
    assert _allowed(theirs).keys() == _allowed(docker_no_caps).keys()
    for guarded in ("mount", "umount2", "pivot_root", "unshare", "setns", "sethostname", "bpf"):
        assert guarded not in _allowed(theirs), f"Docker allows {guarded} only with a capability"
    assert _allowed(theirs)["clone"] == [
        [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    ], "Docker's clone: no namespace flag"

    # Ours, exactly: what bwrap calls, nothing more.
    assert _allowed(ours) == {
        "clone": [
            [
                {
                    "index": 0,
                    "value": CLONE_NEWUSER,
                    "valueTwo": CLONE_NEWUSER,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ]
        ],
        "unshare": [[{"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]],
        "mount": [[]],
        "umount2": [[]],
        "pivot_root": [[]],
        "sethostname": [[]],
    }
    everything = _allowed(profile["syscalls"])
    for never in ("setns", "fsopen", "fsmount", "move_mount", "open_tree", "mount_setattr"):
        assert never not in everything, never
    assert [r["errnoRet"] for r in profile["syscalls"] if r["names"] == ["clone3"]] == [38]


# --------------------------------------------------------------------------- on an engine

#: The job sandbox's bwrap options (src/submitter/sandbox/bwrap.py), run from a clean
#: environment as the worker does, next to a process of the "worker" that holds a secret in
#: its environment and a marker in its command line. The sandbox prints what it sees.
SANDBOX_SCRIPT = r"""
set -u
folder=$(mktemp -d)
SECRET=s3cr3t-in-the-worker sleep 424242 &
set -- --unshare-all --unshare-user --uid 65534 --gid 65534 --disable-userns \
    --hostname submitter-job --die-with-parent --new-session --cap-drop ALL \
    --ro-bind /usr /usr
for name in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$name" ]; then set -- "$@" --symlink "$(readlink "/$name")" "/$name"
    elif [ -d "/$name" ]; then set -- "$@" --ro-bind "/$name" "/$name"; fi
done
set -- "$@" --ro-bind /etc/passwd /etc/passwd --proc /proc --dev /dev \
    --size 67108864 --tmpfs /dev/shm --bind "$folder" /job --chdir /job
env -i PATH=/usr/bin:/bin bwrap "$@" -- /bin/sh -c '
    echo "uid=$(id -u) host=$(hostname)"
    echo "pids=$(ls /proc | grep -c "^[0-9]")"
    m=4242  # matched by the shell: no command line in here holds the marker itself
    for f in /proc/[0-9]*/cmdline; do
        case "$(tr "\0" " " < "$f" 2>/dev/null)" in *"${m}42"*) echo "marker:$f";; esac
    done
    cat /proc/[0-9]*/environ 2>/dev/null | tr "\0" "\n" | grep SECRET | sed "s/^/secret:/"
    unshare --user true 2>/dev/null && echo nested-userns=yes || echo nested-userns=no
    mount -t tmpfs none /job 2>/dev/null && echo mount=yes || echo mount=no
    echo done'
"""


def _in_container(
    engine: Engine, images: Images, *options: str, script: str = SANDBOX_SCRIPT
) -> subprocess.CompletedProcess:
    """`script` in the Submitter image as the worker runs (uid 10001, no capability, no
    privilege escalation), with more docker `options`."""
    return run(
        [
            engine.docker,
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "10001:10001",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *options,
            "--entrypoint",
            "sh",
            images.submitter,
            "-c",
            script,
        ],
        timeout=120,
        check=False,
    )


@pytest.mark.docker
def test_bwrap_needs_the_profile_and_an_unmasked_proc(engine: Engine, images: Images) -> None:
    profile = f"seccomp={SECCOMP / 'sandbox.json'}"

    default = _in_container(engine, images)
    assert "done" not in default.stdout, default.stdout
    assert "No permissions to create new namespace" in default.stderr, default.stderr

    masked = _in_container(engine, images, "--security-opt", profile)
    assert "done" not in masked.stdout, masked.stdout
    assert "Can't mount proc" in masked.stderr, masked.stderr

    sandboxed = _in_container(
        engine, images, "--security-opt", profile, "--security-opt", "systempaths=unconfined"
    )
    out = sandboxed.stdout
    assert sandboxed.returncode == 0 and out.rstrip().endswith("done"), (out, sandboxed.stderr)
    assert "uid=65534 host=submitter-job" in out, out
    assert "marker:" not in out and "secret:" not in out, out  # the worker's process: unseen
    assert int(out.split("pids=")[1].split()[0]) <= 6, out  # bwrap, the shell and its pipe
    assert "nested-userns=no" in out and "mount=no" in out, out


@pytest.mark.docker
def test_profile_allows_no_namespace_without_a_user_namespace(
    engine: Engine, images: Images
) -> None:
    """In the worker container itself (outside any sandbox): namespaces only through a
    new user namespace, exactly as the rules say."""
    done = _in_container(
        engine,
        images,
        "--security-opt",
        f"seccomp={SECCOMP / 'sandbox.json'}",
        script="for flags in --mount '--user --mount' --pid --user; do "
        'unshare $flags true 2>/dev/null && echo "$flags: yes" || echo "$flags: no"; done',
    )
    assert done.stdout.splitlines() == [
        "--mount: no",  # unshare(CLONE_NEWNS): no capability, and seccomp says no
        "--user --mount: no",  # unshare takes CLONE_NEWUSER alone (bwrap uses clone)
        "--pid: no",
        "--user: yes",
    ], (done.stdout, done.stderr)
