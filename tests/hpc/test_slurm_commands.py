"""SLURM command lines and output parsing (pure functions, real output formats)."""

from __future__ import annotations

import shlex

import pytest

from submitter.hpc import slurm
from submitter.hpc.slurm import Accounting, Resources


def test_sbatch_options_are_separate_arguments_and_quote_hostile_values() -> None:
    argv = slurm.sbatch_argv(
        "/w/submitter/j1/.submitter/job.sbatch",
        name="train",
        folder="/w/my jobs/j1",
        resources=Resources(partition="debug", cpus_per_task=4, mem="4G", time="1:00:00"),
    )
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--partition=debug" in argv and "--cpus-per-task=4" in argv
    assert "--mem=4G" in argv and "--time=1:00:00" in argv
    assert not any(a.startswith("--account") for a in argv)  # unset → not passed
    line = shlex.join(argv)
    assert shlex.split(line) == argv  # the remote shell sees exactly these arguments
    assert "'--chdir=/w/my jobs/j1'" in line


@pytest.mark.parametrize(
    ("printed", "job_id"), [("42\n", "42"), ("42;cluster1\n", "42"), ("warn\n43\n", "43")]
)
def test_parse_sbatch(printed: str, job_id: str) -> None:
    assert slurm.parse_sbatch(printed) == job_id


def test_parse_sbatch_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="no job id"):
        slurm.parse_sbatch("sbatch: error: Batch job submission failed\n")


def test_squeue_one_call_for_many_jobs_and_its_parsing() -> None:
    argv = slurm.squeue_argv(["3", "4", "5"])
    assert argv.count("squeue") == 1 and "--jobs=3,4,5" in argv
    output = "3|PENDING|Resources\n4|RUNNING|None\n5|COMPLETED|None\n"
    assert slurm.parse_squeue(output) == {
        "3": ("PENDING", "Resources"),
        "4": ("RUNNING", "None"),
        "5": ("COMPLETED", "None"),
    }


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PENDING", "pending"),
        ("CONFIGURING", "pending"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("COMPLETED", "finished"),
        ("CANCELLED by 0", "finished"),
        ("TIMEOUT", "finished"),
        ("OUT_OF_MEMORY", "finished"),
        ("NODE_FAIL", "finished"),
    ],
)
def test_phase_of(state: str, phase: str) -> None:
    assert slurm.phase_of(state) == phase


SACCT = """\
17|COMPLETED|0:0|65|00:58.120||1|vm|2|1000M|00:10:00|2026-11-23T19:01:05
17.batch|COMPLETED|0:0|65|00:58.100|204800K|1|vm|2|||2026-11-23T19:01:05
17.extern|COMPLETED|0:0|65|00:00.002|1024K|1|vm|2|||2026-11-23T19:01:05
18|FAILED|3:0|2|00:00.010||1|vm|1|500M|UNLIMITED|Unknown
18.batch|FAILED|3:0|2|00:00.010|1200K|1|vm|1|||Unknown
19|TIMEOUT|0:0|61|00:00.030||1|vm|1|1G|00:01:00|2026-11-23T19:02:00
19.batch|CANCELLED|0:15|61|00:00.030|2000K|1|vm|1|||2026-11-23T19:02:00
"""


def test_parse_sacct_takes_state_from_the_job_and_peak_memory_from_its_steps() -> None:
    records = slurm.parse_sacct(SACCT)
    ok = records["17"]
    assert (ok.state, ok.exit_code, ok.signal, ok.elapsed_seconds) == ("COMPLETED", 0, 0, 65)
    assert ok.cpu_seconds == pytest.approx(58.12)
    assert ok.max_rss_bytes == 204800 * 1024
    assert ok.requested_memory_bytes == 1000 << 20
    assert ok.cpu_efficiency == pytest.approx(58.12 / (65 * 2), abs=1e-4)
    assert ok.memory_efficiency == pytest.approx(200 / 1000, abs=1e-4)
    assert slurm.outcome(ok) == ("succeeded", None)
    assert ok.end_time == "2026-11-23T19:01:05" and records["18"].end_time is None
    state, message = slurm.outcome(records["18"])
    assert state == "failed" and "exited with code 3" in str(message)
    state, message = slurm.outcome(records["19"])
    assert state == "failed" and "TIMEOUT" in str(message) and "00:01:00" in str(message)


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("OUT_OF_MEMORY", "ran out of memory"),
        ("NODE_FAIL", "node of the job failed"),
        ("PREEMPTED", "preempted"),
    ],
)
def test_outcome_names_the_slurm_state(state: str, words: str) -> None:
    record = Accounting("7", state, 0, 0, 1, None, None, 1, "n", 1, None, None, "sacct")
    kind, message = slurm.outcome(record)
    assert kind == "failed" and words in str(message) and state in str(message)


def test_cancelled_on_the_cluster_is_cancelled() -> None:
    record = Accounting("7", "CANCELLED", 0, 15, 1, None, None, 1, "n", 1, None, None, "sacct")
    assert slurm.outcome(record)[0] == "cancelled"


SCONTROL = (
    "JobId=21 JobName=submitter UserId=submitter-hpc(998) GroupId=submitter-hpc(998) "
    "Priority=1 JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 "
    "RunTime=00:00:02 TimeLimit=UNLIMITED SubmitTime=2026-11-23T19:00:00 "
    "StartTime=2026-11-23T19:00:01 EndTime=2026-11-23T19:00:03 Partition=debug "
    "NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=2 NumTasks=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=2,mem=1000M,node=1,billing=2 "
    "AllocTRES=cpu=2,mem=1000M,node=1 Command=/w/my dir/job.sbatch WorkDir=/w/my dir "
    "StdOut=/w/my dir/slurm-21.out\n"
)


def test_scontrol_fields_with_spaces_and_nested_equals() -> None:
    jobs = slurm.parse_scontrol_jobs(SCONTROL)
    fields = jobs["21"]
    assert fields["WorkDir"] == "/w/my dir"
    assert fields["TRES"] == "cpu=2,mem=1000M,node=1,billing=2"
    record = slurm.accounting_from_fields(fields, source="scontrol", cpu_seconds=3.0)
    assert (record.state, record.exit_code, record.elapsed_seconds) == ("FAILED", 3, 2)
    assert (record.nodes, record.allocated_cpus) == (1, 2)
    assert record.requested_memory_bytes == 1000 << 20
    assert record.cpu_efficiency == pytest.approx(3.0 / (2 * 2))
    assert record.max_rss_bytes is None and record.memory_efficiency is None


def test_jobcomp_line_without_run_time_uses_start_and_end() -> None:
    line = (
        "JobId=5 UserId=root(0) GroupId=root(0) Name=wrap JobState=COMPLETED Partition=debug "
        "TimeLimit=UNLIMITED StartTime=2026-11-23T19:00:00 EndTime=2026-11-23T19:00:07 "
        "NodeList=vm NodeCnt=1 ProcCnt=2 WorkDir=/tmp ReservationName= Tres=cpu=2,mem=100M,node=1 "
        "Account= QOS= WcKey= Cluster=c SubmitTime=2026-11-23T19:00:00 "
        "EligibleTime=2026-11-23T19:00:00 DerivedExitCode=0:0 ExitCode=0:0"
    )
    record = slurm.accounting_from_fields(slurm.parse_key_values(line), source="jobcomp")
    assert (record.state, record.elapsed_seconds, record.nodes, record.allocated_cpus) == (
        "COMPLETED",
        7,
        1,
        2,
    )
    assert record.requested_memory_bytes == 100 << 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:01.500", 1.5), ("01:02:03", 3723), ("2-00:00:01", 172801), ("UNLIMITED", None)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert slurm.parse_duration(text) == seconds


def test_parse_times_builtin() -> None:
    assert slurm.parse_times("0m0.004s 0m0.002s\n1m2.500s 0m0.500s\n") == pytest.approx(63.0)


def test_submit_limit_refusals_are_told_from_other_refusals() -> None:
    from submitter.hpc.limits import submit_limit_reason

    policy = (
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
        "(job submit limit, user's size and/or time limits)"
    )
    assert submit_limit_reason(f"sbatch: error: AssocMaxSubmitJobLimit\n{policy}") == (
        "AssocMaxSubmitJobLimit"
    )
    assert submit_limit_reason(f"sbatch: error: QOSMaxSubmitJobPerUserLimit\n{policy}") == (
        "QOSMaxSubmitJobPerUserLimit"
    )
    assert submit_limit_reason(policy) is None  # time and size limits say this too
    assert submit_limit_reason("sbatch: error: invalid partition specified: x") is None


def test_array_tasks_in_sbatch_scontrol_and_the_dispatcher() -> None:
    from submitter.hpc.arrays import dispatcher_script
    from submitter.hpc.slurm import Resources, parse_scontrol_jobs, pending_message, sbatch_argv

    argv = sbatch_argv("/w/a.sbatch", name="n", folder="/w", resources=Resources(), array="0-19%4")
    assert "--array=0-19%4" in argv and "--output=/w/slurm-%A_%a.out" in argv
    jobs = parse_scontrol_jobs(
        "JobId=130 ArrayJobId=123 ArrayTaskId=5 JobState=RUNNING\n"
        "JobId=123 ArrayJobId=123 ArrayTaskId=6-19%4 JobState=PENDING\n"
    )
    assert jobs["123_5"]["JobId"] == "123_5" and "123" in jobs
    assert pending_message("Resources") == "pending in SLURM: Resources"
    assert pending_message("None") == "pending in SLURM"
    script = dispatcher_script(["/w/a b", "/w/c"], "/w/root", ["data/x.csv"])
    assert "folders=('/w/a b' /w/c)" in script
    assert "ln -sfn /w/root/shared/data/x.csv data/x.csv" in script


def test_tasks_of_one_array_are_asked_for_by_the_array_id() -> None:
    from submitter.hpc.accounting import _asked_for

    assert _asked_for(["12_0", "12_3", "12_7"]) == ["12"]
    assert _asked_for(["12_0"]) == ["12_0"]  # one task: exactly it
    assert sorted(_asked_for(["12_0", "13_1"])) == ["12_0", "13_1"]
    assert sorted(_asked_for(["12_0", "14"])) == ["12_0", "14"]


def test_find_listing_of_many_folders_parses_by_folder() -> None:
    from submitter.hpc.finishing import array_of, find_argv, parse_find
    from submitter.hpc.transport import RemoteFile

    folders = ["/w/submitter/a", "/w/my jobs/b", "/w/submitter/c"]
    argv = find_argv(folders)
    assert argv[0] == "find" and argv[1:4] == folders and argv[-1] == "%H\\0%P\\0%s\\0"
    assert shlex.split(shlex.join(argv)) == argv
    printed = (
        "/w/submitter/a\0slurm-12_0.out\0006\0"
        "/w/submitter/a\0.submitter/times\00040\0"
        "/w/my jobs/b\0out dir/x\ny.txt\0003\0"
        "/elsewhere\0z\0001\0"
    )
    listings = parse_find(printed, folders)
    assert listings == {
        "/w/submitter/a": [RemoteFile("slurm-12_0.out", 6), RemoteFile(".submitter/times", 40)],
        "/w/my jobs/b": [RemoteFile("out dir/x\ny.txt", 3)],
    }  # c printed nothing: it is not in the answer (its task walks it itself)
    assert array_of("12_4") == "12" and array_of("12") is None and array_of("12_x") is None
