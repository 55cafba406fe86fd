"""Metrics from inside a job: the values a job's own code reports while it runs.

A job writes JSON lines `{"name", "value", "step"}` to the file `$SUBMITTER_METRICS`
(or calls `submitter_metrics.log`, a dependency-free module put on the job's
`PYTHONPATH`). The worker reads the file into the `job_metrics` table: while a `command`
job runs (`follow`), after a `slurm` job (the collect step). Bounded per job
(`SUBMITTER_MAX_METRICS_PER_JOB`); bad lines are skipped with a log line.
Read back with `GET /api/v1/jobs/{id}/metrics`, `submitter jobs metrics`,
`JobHandle.metrics()` and the charts on the job's page.
"""

from pathlib import Path

#: The helper module's file, copied next to a job so its venv imports it without Submitter.
HELPER = Path(__file__).with_name("submitter_metrics.py")
#: Where the metrics file lives inside a job folder (Submitter's own sub-folder).
METRICS_FILE = "metrics.jsonl"
