"""Type stubs of the native core (see native/src/binding.rs)."""

__version__: str

Outcome = (
    tuple[str, str, list[tuple[str, bytes]]]  # ("applied", type_name, [(topic, value), ...])
    | tuple[str, str]  # ("skipped", type_name) or ("python", why)
    | tuple[str, str, str]  # ("dead", reason, message)
)

class NativeCore:
    def __init__(self, manager: str, task_runs: str, task_results: str, sessions: str) -> None: ...
    def apply_batch(
        self, partition: int, records: list[tuple[int, bytes | None, bytes | None]], now_us: int
    ) -> list[Outcome]: ...
    def state_json(self, uid: str) -> str | None: ...
    def applied_offset(self, uid: str) -> int: ...
    def clear(self) -> None: ...

def fingerprints() -> list[tuple[str, str, bytes]]: ...
