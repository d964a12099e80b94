"""Benchmark: 1,000 job_progress calls from a bash worker (run on demand).

    python wrappers/shell/tests/bench_progress.py [--count N] [--runs R]

Prints, per transport and mode, the time the job code spends in the calls
(measured inside the script) and the time until the peer has received every
message. The original bash wrapper spent one socat process per message
(~8 ms each, ~127 messages/s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shellpeer import WRAPPER, Peer, Worker, payload

SCRIPT = f"""source "{WRAPPER}"
job_init
count=$(job_data_get .count)
start=$EPOCHREALTIME
for ((i = 1; i <= count; i++)); do job_progress $((i * 100 / count)) "step $i"; done
end=$EPOCHREALTIME
job_complete "{{\\"callsUs\\": $(( ${{end/./}} - ${{start/./}} ))}}"
"""


def run(tmp: Path, transport: str, ext: bool, count: int) -> tuple[float, float]:
    address = str(tmp / "b.sock") if transport == "unix" else "tcp://127.0.0.1:0"
    peer = Peer(address, ext=ext)
    try:
        script = tmp / "bench.sh"
        script.write_text(SCRIPT)
        begin = time.monotonic()
        worker = Worker(script, payload(peer, {"count": count}, ext=ext))
        peer.wait_type("progress", count, timeout=120)
        delivered = time.monotonic() - begin
        assert worker.wait(60) == 0, worker.stderr
        calls = peer.messages("completed")[0]["result"]["callsUs"] / 1e6
        return calls, delivered
    finally:
        peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("unix", "tcp"):
            for ext in (False, True):
                results = [run(Path(tmp), transport, ext, args.count) for _ in range(args.runs)]
                calls = statistics.median(r[0] for r in results)
                delivered = statistics.median(r[1] for r in results)
                mode = "extended (replay)" if ext else "v1"
                print(
                    f"{transport:4} {mode:17} {args.count} progress: job code {calls:.3f} s "
                    f"({args.count / calls:,.0f}/s), all received {delivered:.3f} s after spawn"
                )


if __name__ == "__main__":
    main()
