"""A worker that saves a checkpoint, then works until killed; a retry resumes from it (CKPT-4).

``data``: ``{"ms": N}`` how long the first attempt works after its checkpoint.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "wrappers" / "python"))

from extjob_worker import Job, run_job


def main(job: Job) -> object:
    if job.has_checkpoint:
        return {"resumedFrom": job.checkpoint_data, "attempt": job.attempt}
    job.checkpoint({"step": 1})
    job.log("info", "checkpoint saved")
    time.sleep(job.data.get("ms", 60000) / 1000)
    return {"resumedFrom": None, "attempt": job.attempt}


run_job(main)
