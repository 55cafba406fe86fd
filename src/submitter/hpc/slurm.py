"""SLURM's command lines and outputs, as pure functions (no I/O: unit-tested on real output).

What goes in: `sbatch`, `squeue`, `sacct`, `scontrol`, `scancel` argument lists — every
value a separate argument, so the transport's `shlex.join` quotes it. What comes out:
parsed job states and the accounting record of a finished job, with seff-style efficiency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

# --------------------------------------------------------------------------- states

PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"}
)
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)
#: Terminal SLURM states and what they mean for the Submitter job.
FAILURE_MESSAGES = {
    "FAILED": "the job script failed",
    "TIMEOUT": "the job hit its time limit (TIMEOUT)",
    "OUT_OF_MEMORY": "the job ran out of memory (OUT_OF_MEMORY)",
    "NODE_FAIL": "a node of the job failed (NODE_FAIL)",
    "BOOT_FAIL": "the job's node failed to boot (BOOT_FAIL)",
    "PREEMPTED": "the job was preempted (PREEMPTED)",
    "DEADLINE": "the job missed its deadline (DEADLINE)",
    "REVOKED": "the job was revoked (REVOKED)",
    "SPECIAL_EXIT": "the job ended in SPECIAL_EXIT",
}
TERMINAL_STATES = frozenset({"COMPLETED", "CANCELLED", *FAILURE_MESSAGES})


def base_state(state: str) -> str:
    """`CANCELLED by 1000` → `CANCELLED`; `COMPLETED+` → `COMPLETED`."""
    return state.split()[0].rstrip("+") if state.strip() else ""


def phase_of(state: str) -> str:
    """The Submitter phase for a SLURM state: pending, running or finished."""
    state = base_state(state)
    if state in TERMINAL_STATES:
        return "finished"
    if state in PENDING_STATES:
        return "pending"
    return "running"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Resources:
    partition: str | None = None
    account: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    gpus: str | None = None
    time: str | None = None


def sbatch_argv(
    script: str,
    *,
    name: str,
    folder: str,
    resources: Resources,
    dependency: str | None = None,
    array: str | None = None,
) -> list[str]:
    """`sbatch --parsable` with every resource as an option (never edited into the script).
    `array` (`0-19%3`) makes a job array, its tasks' output named `slurm-ARRAY_TASK.*`."""
    output = "%A_%a" if array else "%j"
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        f"--chdir={folder}",
        f"--output={folder}/slurm-{output}.out",
        f"--error={folder}/slurm-{output}.err",
        *([f"--array={array}"] if array else []),
    ]
    options = {
        "partition": resources.partition,
        "account": resources.account,
        "nodes": resources.nodes,
        "ntasks": resources.ntasks,
        "cpus-per-task": resources.cpus_per_task,
        "mem": resources.mem,
        "gpus": resources.gpus,
        "time": resources.time,
        "dependency": dependency,
    }
    argv += [f"--{option}={value}" for option, value in options.items() if value is not None]
    argv.append(script)
    return argv


def parse_sbatch(output: str) -> str:
    """`sbatch --parsable` prints `<id>` or `<id>;<cluster>`."""
    first = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {output.strip()[:200]!r}")
    return job_id


SQUEUE_FORMAT = "%i|%T|%r"


def squeue_argv(job_ids: Iterable[str]) -> list[str]:
    """One squeue for many jobs (array tasks as `ARRAY_TASK`); `--states=all` keeps
    recently ended jobs in the answer."""
    return [
        "squeue",
        "--noheader",
        "--array",  # one line per array task (`123_4`), pending ones too
        "--states=all",
        f"--jobs={','.join(job_ids)}",
        f"--format={SQUEUE_FORMAT}",
    ]


def parse_squeue(output: str) -> dict[str, tuple[str, str]]:
    """`{job id: (state, reason)}`; array/het job lines are keyed by their own ids."""
    jobs: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            jobs[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return jobs


SACCT_FIELDS = (
    "JobID",
    "State",
    "ExitCode",
    "ElapsedRaw",
    "TotalCPU",
    "MaxRSS",
    "NNodes",
    "NodeList",
    "AllocCPUS",
    "ReqMem",
    "Timelimit",
    "End",
)


def sacct_argv(job_ids: Iterable[str]) -> list[str]:
    return [
        "sacct",
        "--parsable2",
        "--noheader",
        f"--jobs={','.join(job_ids)}",
        f"--format={','.join(SACCT_FIELDS)}",
    ]


def scontrol_argv(job_id: str | None = None) -> list[str]:
    """`scontrol show job` in one-line form: one job, or every job the controller knows."""
    return ["scontrol", "--oneliner", "show", "job", *([job_id] if job_id else [])]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    return ["scancel", *job_ids]


# --------------------------------------------------------------------------- accounting


@dataclass
class Accounting:
    """The accounting record of a finished job (the job result's `slurm` part)."""

    job_id: str
    state: str
    exit_code: int | None
    signal: int | None
    elapsed_seconds: int | None
    cpu_seconds: float | None
    max_rss_bytes: int | None
    nodes: int | None
    node_list: str | None
    allocated_cpus: int | None
    requested_memory_bytes: int | None
    time_limit: str | None
    source: str  # sacct, scontrol or jobcomp
    end_time: str | None = None  # cluster-local time, as SLURM prints it

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU time used / (elapsed x allocated CPUs), as seff computes it."""
        if not self.cpu_seconds or not self.elapsed_seconds or not self.allocated_cpus:
            return None
        return round(self.cpu_seconds / (self.elapsed_seconds * self.allocated_cpus), 4)

    @property
    def memory_efficiency(self) -> float | None:
        """Peak resident memory / memory requested, as seff computes it."""
        if not self.max_rss_bytes or not self.requested_memory_bytes:
            return None
        return round(self.max_rss_bytes / self.requested_memory_bytes, 4)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "cpu_efficiency": self.cpu_efficiency,
            "memory_efficiency": self.memory_efficiency,
        }


def outcome(accounting: Accounting) -> tuple[str, str | None]:
    """(`succeeded` | `failed` | `cancelled`, message) for a finished SLURM job."""
    state = base_state(accounting.state)
    if state == "COMPLETED" and not accounting.exit_code and not accounting.signal:
        return "succeeded", None
    if state == "CANCELLED":
        return "cancelled", f"SLURM job {accounting.job_id} was cancelled on the cluster"
    if state in ("COMPLETED", "FAILED"):
        if accounting.signal:
            return "failed", (
                f"SLURM job {accounting.job_id} failed: killed by signal {accounting.signal}"
            )
        return "failed", (
            f"SLURM job {accounting.job_id} failed: the job script exited with code "
            f"{accounting.exit_code}"
        )
    message = FAILURE_MESSAGES.get(state, f"the job ended in state {state}")
    if state == "TIMEOUT" and accounting.time_limit:
        message += f", limit {accounting.time_limit}"
    return "failed", f"SLURM job {accounting.job_id} failed: {message}"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str | None, default_unit: str = "") -> int | None:
    """`123456K` → bytes; sacct and scontrol sizes (`4000M`, `1G`, `2000Mn`, `500Mc`)."""
    if not text:
        return None
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)[nc]?", text.strip())
    if not match:
        return None
    unit = match.group(2) or default_unit
    return int(float(match.group(1)) * _UNITS[unit])


def parse_duration(text: str | None) -> float | None:
    """`[D-]HH:MM:SS[.mmm]`, `MM:SS.mmm`, `MM:SS` → seconds."""
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return days * 86400 + seconds


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """`2:0` → (2, 0): the exit code and the signal that ended the job."""
    if not text or ":" not in text:
        return None, None
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig)
    except ValueError:
        return None, None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def parse_sacct(output: str) -> dict[str, Accounting]:
    """Accounting per job from `sacct --parsable2` (allocation and step lines).

    The allocation line (`123`) gives state, exit code, elapsed, CPU time (the sum of its
    steps), nodes and requested memory; MaxRSS is only on step lines (`123.batch`, `123.0`),
    so the job's peak is the largest of its steps'.
    """
    records: dict[str, Accounting] = {}
    peaks: dict[str, int] = {}
    for line in output.splitlines():
        values = line.split("|")
        if len(values) < len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, values, strict=False))
        job_id, _, step = row["JobID"].partition(".")
        rss = parse_size(row["MaxRSS"])
        if rss is not None:
            peaks[job_id] = max(peaks.get(job_id, 0), rss)
        if step:
            continue
        exit_code, sig = parse_exit_code(row["ExitCode"])
        elapsed = _int(row["ElapsedRaw"])
        nodes = _int(row["NNodes"])
        cpus = _int(row["AllocCPUS"])
        records[job_id] = Accounting(
            job_id=job_id,
            state=base_state(row["State"]),
            exit_code=exit_code,
            signal=sig,
            elapsed_seconds=elapsed,
            cpu_seconds=parse_duration(row["TotalCPU"]),
            max_rss_bytes=None,
            nodes=nodes,
            node_list=row["NodeList"] or None,
            allocated_cpus=cpus,
            requested_memory_bytes=_requested_memory(row["ReqMem"], nodes, cpus),
            time_limit=row["Timelimit"] or None,
            source="sacct",
            end_time=_time(row["End"]),
        )
    for job_id, peak in peaks.items():
        if job_id in records:
            records[job_id].max_rss_bytes = peak
    return records


def _requested_memory(text: str, nodes: int | None, cpus: int | None) -> int | None:
    """sacct's ReqMem: `4000M` (total, 21.08+), `4000Mn` per node, `500Mc` per CPU."""
    size = parse_size(text, default_unit="M")
    if size is None:
        return None
    if text.endswith("n") and nodes:
        return size * nodes
    if text.endswith("c") and cpus:
        return size * cpus
    return size


_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_key_values(line: str) -> dict[str, str]:
    """`Key=value Key2=value with spaces` (scontrol -o, jobcomp/filetxt) → dict."""
    matches = list(_KEY.finditer(line))
    fields: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end() : end].strip())
    return fields


def parse_scontrol_jobs(output: str) -> dict[str, dict[str, str]]:
    """`scontrol -o show job` (one line per job) → `{job id: fields}`."""
    jobs = {}
    for line in output.splitlines():
        fields = parse_key_values(line)
        if "JobId" in fields:
            # An array task has its own JobId; Submitter knows it as ARRAY_TASK (`123_4`).
            array, task = fields.get("ArrayJobId", ""), fields.get("ArrayTaskId", "")
            if array.isdigit() and task.isdigit():
                fields = {**fields, "JobId": f"{array}_{task}"}
            jobs[fields["JobId"]] = fields
    return jobs


def pending_message(reason: str) -> str:
    """The job message while SLURM holds a job (`squeue` %r: Priority, Resources, ...)."""
    reason = reason.strip()
    if not reason or reason == "None":
        return "pending in SLURM"
    return f"pending in SLURM: {reason}"


def accounting_from_fields(
    fields: Mapping[str, str], *, source: str, cpu_seconds: float | None = None
) -> Accounting:
    """An accounting record from `scontrol show job` or jobcomp/filetxt fields.

    Without accounting storage SLURM keeps no CPU time nor peak memory; `cpu_seconds` comes
    from the batch wrapper's own measurement when there is one.
    """
    exit_code, sig = parse_exit_code(fields.get("ExitCode"))
    nodes = _int(fields.get("NumNodes") or fields.get("NodeCnt"))
    cpus = _int(fields.get("NumCPUs") or fields.get("ProcCnt"))
    elapsed = parse_duration(fields.get("RunTime"))
    if elapsed is None:
        elapsed = _span(fields.get("StartTime"), fields.get("EndTime"))
    tres = dict(
        item.split("=", 1)
        for item in (fields.get("AllocTRES") or fields.get("Tres") or "").split(",")
        if "=" in item
    )
    return Accounting(
        job_id=fields.get("JobId", ""),
        state=base_state(fields.get("JobState", "")),
        exit_code=exit_code,
        signal=sig,
        elapsed_seconds=int(elapsed) if elapsed is not None else None,
        cpu_seconds=cpu_seconds,
        max_rss_bytes=None,
        nodes=nodes,
        node_list=fields.get("NodeList") or None,
        allocated_cpus=cpus,
        requested_memory_bytes=parse_size(tres.get("mem"), default_unit="M"),
        time_limit=fields.get("TimeLimit") or None,
        source=source,
        end_time=_time(fields.get("EndTime")),
    )


def _time(text: str | None) -> str | None:
    return text if text and text not in ("Unknown", "None") else None


def _span(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    try:
        if start and end:
            return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        pass
    return None


def parse_times(output: str) -> float | None:
    """bash's `times` builtin: the second line is the children's user and system time."""
    lines = output.strip().splitlines()
    if len(lines) < 2:
        return None
    total = 0.0
    for part in lines[1].split():
        match = re.fullmatch(r"(\d+)m([\d.]+)s", part)
        if not match:
            return None
        total += int(match.group(1)) * 60 + float(match.group(2))
    return total
