"""Progress of a C-MOVE or C-GET: the sub-operation counts the PACS reports with each pending response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset

#: Pending statuses of C-MOVE / C-GET (one per sub-operation), and the final ones that count as done.
PENDING = (0xFF00,)
SUCCESS = 0x0000
WARNING = 0xB000

#: What failure statuses mean, in words a service engineer can act on (PS3.4 C.4.2.1.5, C.4.3.1.4).
FAILURES: dict[int, str] = {
    0xA701: "the PACS ran out of resources counting the matches",
    0xA702: "the PACS ran out of resources for the sub-operations",
    0xA801: "the PACS does not know our AE title as a move destination (register the box on the PACS)",
    0xA900: "the identifier does not match the PACS's information model",
    0xC000: "the PACS could not process the request",
    0xFE00: "the retrieval was cancelled",
}


@dataclass
class SubOperations:
    """Counts of one retrieval (``remaining`` is None until the PACS reports it)."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    status: int | None = None
    failed_sop_uids: list[str] = field(default_factory=list)

    def update(self, status: Dataset) -> None:
        """Take the counts of one C-MOVE/C-GET response (absent counts keep their value)."""
        for attr, keyword in (("remaining", "NumberOfRemainingSuboperations"),
                              ("completed", "NumberOfCompletedSuboperations"),
                              ("failed", "NumberOfFailedSuboperations"),
                              ("warning", "NumberOfWarningSuboperations")):  # fmt: skip
            value = status.get(keyword)
            if value is not None and value != "":
                setattr(self, attr, int(value))

    def finish(self, status: Dataset, identifier: Dataset | None) -> None:
        """The final response: its status and the failed SOP Instance UIDs it lists."""
        self.update(status)
        self.status = int(status.Status)
        if self.status in (SUCCESS, WARNING):
            self.remaining = 0
        failed = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
        if failed:
            self.failed_sop_uids = [str(u) for u in ([failed] if isinstance(failed, str) else failed)]

    def meaning(self) -> str:
        """The final status in words."""
        if self.status is None:
            return "not finished"
        if self.status == SUCCESS:
            return "success"
        if self.status == WARNING:
            return f"{self.failed} sub-operation(s) failed, {self.warning} with warnings"
        key = 0xC000 if self.status & 0xF000 == 0xC000 else self.status  # Cxxx: "unable to process"
        return f"{FAILURES.get(key, 'failure')} (status 0x{self.status:04X})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (status as ``0x....``)."""
        out = asdict(self)
        out["status"] = None if self.status is None else f"0x{self.status:04X}"
        return out


#: Called with the counts after every pending response.
ProgressFn = Callable[[SubOperations], None]
