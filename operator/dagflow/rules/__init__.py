"""Rules every side shares, touching no cluster: validation, names, `$(...)` references, matrices,
parameters, outputs and cron expressions. Pure; imports only `dagflow.api` and small pure libraries."""
