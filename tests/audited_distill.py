"""`kd distill` with an audit hook that records every file this process opens for writing.

Run under `accelerate launch`; each rank writes the list to AUDIT_DIR/rank-<RANK>.txt at exit,
after a first line `#checksums N`: how often this process read the cached logits whole to check them;
AUDIT_DIR/rank-<RANK>.pid holds its process id from the start (a test may kill it).
SHARD_ROWS, when set, is the number of rows the teacher labels per shard (kd.teacher.logits_cache).
"""

import atexit
import os
import sys

import kd.teacher.logits_cache
from kd.cli import main

if "SHARD_ROWS" in os.environ:
    kd.teacher.logits_cache.SHARD_ROWS = int(os.environ["SHARD_ROWS"])

written: set[str] = set()
checksums = 0
real_digest_rows = kd.teacher.logits_cache._digest_rows


def counted_digest_rows(arrays):
    global checksums
    checksums += 1
    return real_digest_rows(arrays)


kd.teacher.logits_cache._digest_rows = counted_digest_rows


def record(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and args[1] and set(str(args[1])) & set("wax+"):
        written.add(os.path.abspath(args[0]))
    elif event in ("os.rename", "os.replace") and isinstance(args[1], (str, os.PathLike)):
        written.add(os.path.abspath(args[1]))


def report() -> None:
    path = os.path.join(os.environ["AUDIT_DIR"], f"rank-{os.environ.get('RANK', '0')}.txt")
    with open(path, "w") as handle:
        handle.write("\n".join([f"#checksums {checksums}", *sorted(written)]))


with open(os.path.join(os.environ["AUDIT_DIR"], f"rank-{os.environ.get('RANK', '0')}.pid"), "w") as handle:
    handle.write(str(os.getpid()))
sys.addaudithook(record)
atexit.register(report)
sys.exit(main(["distill", *sys.argv[1:]]))
