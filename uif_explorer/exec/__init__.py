"""Where independent evaluations run: in-process, a process pool or Ray."""
