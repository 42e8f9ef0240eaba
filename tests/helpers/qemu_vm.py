"""One appliance disk booted in QEMU/KVM (TCG where KVM cannot run firmware) for system tests: UEFI (OVMF),
2 vCPU, 4 GB, virtio disk through a qcow2 overlay (the built image is never written), user-mode networking
forwarding the web UI and DICOM ports to 127.0.0.1, a USB (xHCI) controller for virtual sticks, the serial
console in a file, QMP for the monitor (device_add, screendump) and the QEMU guest agent (test images only) to
read files and run commands in the box.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

#: UEFI firmware for QEMU (Debian package ovmf).
OVMF = Path("/usr/share/ovmf/OVMF.fd")
QEMU = "qemu-system-x86_64"
#: QEMU runs niced: under TCG it keeps two host cores busy for long stretches on build hosts shared with other work.
NICE = ["nice", "-n", "10"]
#: The CPU model under TCG (``APPLIANCE_VM_CPU`` overrides it).
TCG_CPU = "max"


def vm_unavailable() -> str | None:
    """Why a VM cannot be booted here (None when it can)."""
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        return "QEMU is not installed (apt-get install qemu-system-x86 qemu-utils)"
    if not OVMF.is_file():
        return f"{OVMF} is missing (apt-get install ovmf)"
    return None


def kvm_usable() -> bool:
    """Whether KVM runs UEFI firmware here. Some nested hypervisors expose /dev/kvm but cannot run real-mode or
    firmware code (a 'KVM internal error' at once); there the VM falls back to TCG (much slower).
    ``APPLIANCE_VM_ACCEL=kvm|tcg`` decides without probing."""
    forced = os.environ.get("APPLIANCE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    probe = subprocess.Popen(
        [QEMU, "-enable-kvm", "-cpu", "host", "-machine", "q35", "-m", "256", "-bios", str(OVMF), "-nodefaults",
         "-display", "none", "-serial", "none", "-monitor", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        probe.communicate(timeout=8)
        return False  # QEMU ended by itself: KVM could not even start the firmware (e.g. "failed to set MSR")
    except subprocess.TimeoutExpired:  # QEMU pauses (does not exit) on an internal error: look at what it said
        probe.kill()
        out, _ = probe.communicate()
    return b"KVM internal error" not in out


class _JsonLines:
    """A unix socket speaking one JSON object per line (QMP, the guest agent)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.lstrip(b"\xff")
        return json.loads(line) if line.strip() else self.recv(timeout)

    def close(self) -> None:
        self.sock.close()


class Qmp:
    """QEMU's machine protocol (the monitor)."""

    def __init__(self, path: Path) -> None:
        self.io = _JsonLines(path, 30)
        self.io.recv(30)  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """Run ``command``; its ``return`` value (events are skipped), RuntimeError on an ``error``."""
        self.io.send({"execute": command, **({"arguments": arguments} if arguments else {})})
        while True:  # events may come first
            reply = self.io.recv(timeout)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")


class GuestAgent:
    """The QEMU guest agent in the box (test images only): run commands, read files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.io: _JsonLines | None = None

    def _connect(self, timeout: float) -> _JsonLines:
        if self.io is None:
            io = _JsonLines(self.path, timeout)
            sync = int(time.time()) & 0xFFFFFF
            io.send({"execute": "guest-sync", "arguments": {"id": sync}})
            while io.recv(timeout).get("return") != sync:
                pass
            self.io = io
        return self.io

    def call(self, command: str, timeout: float = 30, **arguments: Any) -> Any:
        io = self._connect(timeout)
        io.send({"execute": command, **({"arguments": arguments} if arguments else {})})
        reply = io.recv(timeout)
        if "error" in reply:
            raise RuntimeError(f"guest agent {command}: {reply['error']}")
        return reply.get("return")

    def wait_ready(self, timeout: float) -> None:
        """Wait until the agent answers (the box has booted far enough to start it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("guest-ping", timeout=5)
                return
            except (OSError, ConnectionError, RuntimeError, TimeoutError, ValueError):
                if self.io is not None:
                    self.io.close()
                    self.io = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def run(self, *argv: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``argv`` in the box; (exit code, stdout + stderr)."""
        pid = self.call("guest-exec", path=argv[0], arg=list(argv[1:]), **{"capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                out = base64.b64decode(status.get("out-data", "")) + base64.b64decode(status.get("err-data", ""))
                return int(status.get("exitcode", -1)), out.decode(errors="replace")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv} did not finish in {timeout} s")
            time.sleep(0.2)

    def read(self, path: str) -> bytes:
        """The bytes of the file ``path`` in the box."""
        handle = self.call("guest-file-open", path=path, mode="r")
        data = b""
        try:
            while True:
                chunk = self.call("guest-file-read", handle=handle, count=1 << 16)
                data += base64.b64decode(chunk["buf-b64"])
                if chunk.get("eof"):
                    return data
        finally:
            self.call("guest-file-close", handle=handle)


class Vm:
    """The box in QEMU; ``start`` boots it, ``stop`` powers it off. Files land in ``workdir``."""

    def __init__(self, disk: Path, workdir: Path, http_port: int, dicom_port: int) -> None:
        self.disk, self.workdir = disk, workdir
        self.http_port, self.dicom_port = http_port, dicom_port
        self.serial_log = workdir / "serial.log"
        self.overlay = workdir / "overlay.qcow2"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self.agent = GuestAgent(workdir / "qga.sock")
        self.accel = "kvm" if kvm_usable() else "tcg"

    def accel_args(self) -> list[str]:
        """KVM with the host CPU, or QEMU's multi-threaded TCG where KVM cannot run firmware (see kvm_usable)."""
        if self.accel == "kvm":
            return ["-enable-kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", os.environ.get("APPLIANCE_VM_CPU") or TCG_CPU]

    def start(self) -> None:
        """Boot (a fresh overlay over the built disk on the first start; later starts keep it)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.overlay.exists():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.disk), "-F", "raw", str(self.overlay)],
                check=True, timeout=60,
            )  # fmt: skip
        fwd = f"hostfwd=tcp:127.0.0.1:{self.http_port}-:8080,hostfwd=tcp:127.0.0.1:{self.dicom_port}-:11112"
        cmd = [
            *NICE, QEMU, *self.accel_args(), "-machine", "q35", "-smp", "2", "-m", "4096",
            "-bios", str(OVMF), "-display", "none", "-vga", "none", "-device", "virtio-vga",
            "-drive", f"file={self.overlay},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0",
            "-device", "qemu-xhci,id=xhci",
            "-chardev", f"socket,id=qga0,path={self.workdir / 'qga.sock'},server=on,wait=off",
            "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            "-serial", f"file:{self.serial_log}",
        ]  # fmt: skip
        qemu_log = open(self.workdir / "qemu.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=qemu_log, stderr=qemu_log)
        self.qmp = Qmp(self.workdir / "qmp.sock")

    def serial(self) -> str:
        """The serial console so far."""
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def stop(self) -> None:
        """Power off (QMP quit), then make sure QEMU is gone."""
        if self.agent.io is not None:
            self.agent.io.close()
            self.agent.io = None
        if self.proc is None:
            return
        if self.proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit", timeout=10)
            except (OSError, RuntimeError, ConnectionError):
                pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.qmp is not None:
            self.qmp.io.close()
            self.qmp = None

    def attach_stick(self, image: Path, name: str, writable: bool = False) -> None:
        """Plug a virtual USB stick (a raw image, read-only for QEMU unless ``writable``: a stick for an export)
        into the xHCI controller."""
        assert self.qmp is not None
        self.qmp.execute(
            "blockdev-add",
            {"driver": "raw", "node-name": name, "read-only": not writable,
             "file": {"driver": "file", "filename": str(image), "read-only": not writable}},
        )  # fmt: skip
        self.qmp.execute(
            "device_add", {"driver": "usb-storage", "bus": "xhci.0", "drive": name, "id": name, "removable": True}
        )

    def detach_stick(self, name: str) -> None:
        """Pull the virtual stick out."""
        assert self.qmp is not None
        self.qmp.execute("device_del", {"id": name})

    def screendump(self, dest: Path) -> Path:
        """The display as a PNG."""
        assert self.qmp is not None
        self.qmp.execute("screendump", {"filename": str(dest), "format": "png"})
        return dest
