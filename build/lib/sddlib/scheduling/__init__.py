"""Many runs: one plan (each run once, what it needs first, the biggest first; plan) and
its backends (this process, worker processes on this machine, Ray tasks on a cluster:
local, distributed), what the book and the CLI call (sweep.run_many), grid files
(grid) and worker counts (parallel). Imports the engine and below.
"""
