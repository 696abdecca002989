"""How a training worker ends, as its exit code: the supervisor decides what to do next from it."""

from enum import IntEnum


class WorkerExit(IntEnum):
    OK = 0  # done, or stopped on request (a checkpoint is kept)
    FAILED = 1  # anything else; the error event and worker.log say what
    BAD_INPUT = 2  # a session field, a dataset row, a model name: one sentence in the error event
    BACKEND_UNAVAILABLE = 3  # the backend cannot import here: "auto" falls back to peft
    OOM = 4  # out of memory: the supervisor may retry with the cheapest remedy


# The supervisor's own exit code after a stop by Ctrl+C (128 + SIGINT, as shells report it).
EXIT_STOPPED = 130
