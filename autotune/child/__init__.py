"""Everything that runs in the trial interpreter: one trial (build, compile, time, evaluate),
the fp32 reference and the per-layer sensitivity pass.

Entry point: ``python -m autotune.child.main JOB.json RESULT.json``. Nothing here imports
optuna or the tuner's process management (`autotune.launch`), so the child runs in any
interpreter with torch and the backend's device libraries (a test checks the import graph).
"""
