"""A job that checkpoints, fails its first attempt and resumes in the second
from the checkpoint (CKPT-2, CKPT-4): what the job page shows of attempts."""

from extjob_worker import run_job


def resume(job):
    done = (job.checkpoint_data or {}).get("done", 0)
    for step in range(done + 1, 5):
        job.progress(step * 25, f"step {step} of 4")
        job.checkpoint({"done": step})
        if step == 2 and done == 0:  # the first attempt
            raise RuntimeError("lost the network at step 2")
    return {"resumedFrom": done}


if __name__ == "__main__":
    run_job(resume)
