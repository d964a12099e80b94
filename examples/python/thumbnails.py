"""Example job in Python: makes "thumbnails", one step at a time.

data: {"steps": 20, "delayMs": 500}. Runs with the Python wrapper
(wrappers/python/extjob_worker.py on PYTHONPATH).
"""

from extjob_worker import run_job


def make_thumbnails(job):
    steps = int(job.data.get("steps", 20))
    delay = job.data.get("delayMs", 500) / 1000
    for i in range(1, steps + 1):
        # The real work would go here (heartbeats go on meanwhile); waiting
        # on the cancel request instead of sleeping makes a cancel prompt.
        if job.wait_for_cancel(delay):
            raise RuntimeError(f"cancelled after {i - 1} of {steps} thumbnails")
        job.progress(i * 100 / steps, f"thumbnail {i} of {steps}")
        if i % 5 == 0:
            job.info(f"{i} thumbnails written", done=i)
    return {"thumbnails": steps}


if __name__ == "__main__":
    run_job(make_thumbnails)
