"""Job kinds (spec model + run function), the job state machine and the job service."""
