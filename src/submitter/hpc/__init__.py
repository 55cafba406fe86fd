"""HPC: SLURM clusters reached over SSH (or on this host), job staging and monitoring."""
