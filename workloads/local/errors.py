"""Errors of the local-mode supervisor. Each message says what is wrong and what to do."""

from __future__ import annotations


class LocalError(Exception):
    """Base class: anything `strata local` reports to the user as a clear error."""


class ConfigError(LocalError):
    """A bad port override, path or option."""


class PortInUseError(LocalError):
    def __init__(self, service: str, key: str, port: int, holder: str | None, env_var: str):
        self.service, self.key, self.port, self.holder = service, key, port, holder
        who = f" by {holder}" if holder else " by another process"
        super().__init__(
            f"port {port} (127.0.0.1, '{key}') needed by service '{service}' is already taken{who}.\n"
            f"  Fix: stop that process, or give '{key}' another port: "
            f"`strata local up --port {key}=<free port>` or `export {env_var}=<free port>`."
        )


class MissingDependencyError(LocalError):
    def __init__(self, service: str, what: str, fix: str, *more: "MissingDependencyError"):
        self.service, self.what, self.fix = service, what, fix
        self.missing = [(service, what, fix)] + [m for e in more for m in e.missing]
        super().__init__("\n".join(
            f"service '{s}' needs {w}, which is not available.\n  Fix: {f}" for s, w, f in self.missing
        ))

    @classmethod
    def combine(cls, errors: list["MissingDependencyError"]) -> "MissingDependencyError":
        first = errors[0]
        return cls(first.service, first.what, first.fix, *errors[1:])


class ServiceFailedError(LocalError):
    def __init__(self, service: str, reason: str, log_path: str | None = None, log_tail: str = ""):
        self.service, self.reason = service, reason
        msg = f"service '{service}' failed to start: {reason}"
        if log_path:
            msg += f"\n  Log: {log_path}"
        if log_tail.strip():
            msg += "\n  Last log lines:\n" + "\n".join("    " + ln for ln in log_tail.rstrip().splitlines())
        super().__init__(msg)


class UnknownServiceError(LocalError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown service {name!r}; known services: {', '.join(known)}")
