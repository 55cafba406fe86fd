"""Sweeps: one request, one child job per combination of a parameter matrix.

`matrix` expands the template; `service` creates, releases, settles and compares the
children; the `sweep` job kind (submitter.jobs.sweep) is the parent; SLURM sweeps become
one job array (submitter.hpc.arrays).
"""
