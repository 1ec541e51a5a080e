"""Every default autotune has, once: the options a user sets (read by StudyOptions, verify
and the CLI) and the measurement protocol a trial gets without them (`autotune.wire`).

Plain constants with no imports, so the CLI's parser can show them without importing the
tuner (and torch).
"""

BACKEND = "cpu"
TRIALS = 50
MAX_ACCURACY_DROP = 0.5  # points of top-1 below fp32
MEASURE_SECONDS = 1.0  # timed seconds per trial after warm-up
WARMUP_ITERS = 3  # at least this many untimed iterations (the 1st compiles, the 2nd traces)
WARMUP_SHARE = 0.5  # ... and warm-up lasts at least this share of the timed seconds
MIN_BLOCKS = 5  # timed blocks a measurement has at least
TIMEOUT_PER_TRIAL = 300.0  # a trial's process group is killed after this long
SAMPLERS = ("autotune", "tpe", "random")
SAMPLER = "autotune"
STOP_SLOWER = 3.0  # stop a trial this many times slower than the best feasible one
LATENCY_TIME_CAP = 5  # timing for a latency percentile lasts at most this x measure seconds
LATENCY_PERCENTILE = 95.0  # per-batch latency percentile a budget constrains
OBJECTIVE = "throughput"  # or "latency": what the study maximizes / minimizes
CONFIRM = 3  # re-measure this many top trials
STORAGE = "sqlite:///autotune.db"
CACHE_DIR_SHOWN = "~/.cache/autotune"  # how help texts name `study_options.default_cache_dir`
JOBS = 1  # trials at once on one host
HEARTBEAT = 10  # seconds
SILENT_BEATS = 3  # a trial silent for this many heartbeat intervals is lost (re-queued)
VERIFY_ROUNDS = 3  # fresh processes `autotune verify` runs
MAX_SLOWDOWN = 0.10  # `autotune verify` fails below (1 - this) x the export's throughput
SEQ_LEN = 128  # tokens per row of a Hugging Face text model's synthetic inputs (--seq-len)
STORAGE_RETRY_SECONDS = 180.0  # a storage call unreachable or busy is retried this long
SQLITE_BUSY_TIMEOUT = 5.0  # seconds SQLite itself waits on a lock before a retry round
METRICS = ("top1", "agreement", "pcc", "cosine")  # --metric: studies.metrics.BUILTIN
