"""What every room shares and no stage owns: command-line flags and the SIGTERM stop (``cli``),
logging (``logs``), atomic file writes (``fileio``), the Ray session (``cluster``), the bounded
in-flight scheduler of the local and Ray engines (``scheduler``), where worker processes start from
(``processes``) and the device a command computes on (``device``). Imports no other room."""
