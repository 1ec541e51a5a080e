"""Process management on the tuner's side: start trial processes (spawned or forked from a
server that has imported torch), enforce timeouts, and probe trial interpreters.

It names the child's entry module as data (`runner.TRIAL_ENTRY`) and never imports the
child's code (`autotune.child`), nor optuna.
"""
