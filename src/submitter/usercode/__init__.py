"""What the kinds that run a user's own code share: the `slurm` kind (on a cluster) and the
`command` kind (on a worker). The spec's `environment` and `files` sections and their
checks, the venv recipe and its key, the provided files, and the metrics a job writes.

One rule, one place: a change to how a venv is keyed or which requirements are refused
applies to both kinds at once.
"""
