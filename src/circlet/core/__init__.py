"""The pure core: the build model, its rules, config parsing and job plans.

Nothing in this package does I/O: no files, environment, network, subprocesses or frameworks.
Time is passed in. Adapters around it (store, vcs, runner, executors, http) do the I/O.
"""
