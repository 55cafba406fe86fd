"""Make deploy/seccomp/sandbox.json from Docker's default seccomp profile.

    python3 deploy/seccomp/make_profile.py deploy/seccomp/docker-default-20.10.24.json \
        > deploy/seccomp/sandbox.json

Two steps, both explained in deploy/seccomp/README.md:

1. Docker's profile is resolved for the worker container: no capabilities (compose's
   `cap_drop: [ALL]`, Kubernetes' `drop: ["ALL"]`), amd64 or arm64, a kernel of 4.8 or
   later. The result is in the OCI runtime-spec form (`architectures`, unconditional
   `syscalls`), which Docker, containerd and CRI-O all read the same way; Docker's own
   `archMap`/`includes`/`excludes` are unknown to containerd, which would ignore them and so
   allow every capability-guarded rule.
2. The rules bubblewrap needs to build a sandbox without CAP_SYS_ADMIN are appended
   (SANDBOX_RULES below), each with a `comment` that says why.

Standard library only; the output is deterministic, and tests/deploy/test_seccomp.py checks
that sandbox.json is exactly this script's output.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: Docker's arch names for the platforms the image is built for, and their seccomp
#: architectures (Docker's archMap: a 64-bit arch with its compat arches).
ARCHES = {"amd64", "x86", "x32", "arm64", "arm"}
SECCOMP_ARCHES = {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}
#: The oldest kernel the profile is for: Docker's `minKernel` rules at or below it apply.
KERNEL = (4, 8)

CLONE_NEWUSER = 0x10000000
PREFIX = "submitter sandbox: "

SANDBOX_RULES: list[dict[str, Any]] = [
    {
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [
            {
                "index": 0,
                "value": CLONE_NEWUSER,
                "valueTwo": CLONE_NEWUSER,
                "op": "SCMP_CMP_MASKED_EQ",
            }
        ],
        "comment": PREFIX + "bwrap's clone into new user, mount, PID, IPC, UTS, network and "
        "cgroup namespaces; namespace flags only together with CLONE_NEWUSER (flags are "
        "argument 0 on amd64 and arm64). Docker's rule above still allows clone without any "
        "namespace flag (fork, threads); clone3 still answers ENOSYS, so glibc uses clone.",
    },
    {
        "names": ["unshare"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        "comment": PREFIX + "bwrap's second, nested user namespace (it maps the sandbox's "
        "uid 65534 and, with --disable-userns, caps further user namespaces at none); "
        "CLONE_NEWUSER alone, nothing else.",
    },
    {
        "names": ["mount", "umount2", "pivot_root"],
        "action": "SCMP_ACT_ALLOW",
        "comment": PREFIX + "bwrap builds the sandbox's root in its new mount namespace: "
        "bind mounts (read-only ones remounted), a tmpfs root, /proc, /dev, /dev/pts, "
        "/dev/shm, then pivot_root into it and a lazy unmount of the old root. The kernel "
        "allows these only with CAP_SYS_ADMIN over the mount namespace, which the worker "
        "has only inside a user namespace it made.",
    },
    {
        "names": ["sethostname"],
        "action": "SCMP_ACT_ALLOW",
        "comment": PREFIX + "bwrap --hostname in the sandbox's new UTS namespace (the kernel "
        "requires CAP_SYS_ADMIN over that namespace, as for mount).",
    },
]


def _applies(rule: dict[str, Any]) -> bool:
    """Whether a rule of Docker's profile applies to the worker container."""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("caps"):  # the container has no capability
        return False
    arches = includes.get("arches")
    if arches and not set(arches) & ARCHES:
        return False
    if excludes.get("arches") and set(excludes["arches"]) & ARCHES:
        return False
    kernel = includes.get("minKernel")
    return not kernel or tuple(int(part) for part in kernel.split(".")) <= KERNEL


def make(docker: dict[str, Any]) -> dict[str, Any]:
    architectures = []
    for entry in docker["archMap"]:
        if entry["architecture"] in SECCOMP_ARCHES:
            architectures += [entry["architecture"], *entry["subArchitectures"]]
    syscalls = []
    for rule in docker["syscalls"]:
        if not _applies(rule):
            continue
        out: dict[str, Any] = {"names": rule["names"], "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            out["args"] = [
                {
                    "index": arg["index"],
                    "value": arg["value"],
                    "valueTwo": arg.get("valueTwo", 0),
                    "op": arg["op"],
                }
                for arg in rule["args"]
            ]
        if rule.get("comment"):
            out["comment"] = rule["comment"]
        syscalls.append(out)
    syscalls += SANDBOX_RULES
    return {
        "defaultAction": docker["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }


def render(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent="\t") + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as source:
        sys.stdout.write(render(make(json.load(source))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
