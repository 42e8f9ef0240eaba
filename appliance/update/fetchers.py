"""Where a box reads a repository from: a USB folder or a LAN HTTP mirror (never the internet).

Both implement python-tuf's :class:`tuf.ngclient.FetcherInterface`; TUF checks lengths and hashes of what
they return, so a fetcher only has to deliver bytes or a clean error (404 -> ``DownloadHTTPError``).
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024

#: URL prefix the USB fetcher answers (the updater needs URLs; this one never leaves the folder).
USB_SCHEME = "usb://"


class UsbFolderFetcher(FetcherInterface):
    """Reads ``usb://repo/<path>`` from a mounted folder; nothing outside the folder is reachable."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(USB_SCHEME):
            raise DownloadHTTPError(f"{url} is not a USB repository URL", 404)
        rel = urllib.parse.unquote(url[len(USB_SCHEME) :].split("/", 1)[1] if "/" in url[len(USB_SCHEME) :] else "")
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            raise DownloadHTTPError(f"{rel} not found on the USB repository {self.root}", 404)
        return self._chunks(path)

    @staticmethod
    def _chunks(path: Path) -> Iterator[bytes]:
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield chunk
        except OSError as exc:  # the stick was pulled or the medium failed mid-read
            raise DownloadError(f"reading {path} failed: {exc}; check the USB stick") from exc


class HttpMirrorFetcher(FetcherInterface):
    """Plain HTTP(S) GET from a LAN mirror with a timeout; no proxies, no redirects off the mirror host."""

    def __init__(self, timeout_s: float = 15.0) -> None:
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._opener.open(url, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise DownloadHTTPError(f"{url}: HTTP {exc.code}", exc.code) from exc
        if urllib.parse.urlparse(response.geturl()).netloc != urllib.parse.urlparse(url).netloc:
            response.close()
            raise DownloadHTTPError(f"{url} redirected off the mirror to {response.geturl()}", 403)
        return self._chunks(response)

    @staticmethod
    def _chunks(response: object) -> Iterator[bytes]:
        try:
            while chunk := response.read(_CHUNK):  # type: ignore[attr-defined]
                yield chunk
        except (OSError, http.client.HTTPException) as exc:  # connection reset, timeout, incomplete read
            raise DownloadError(f"the mirror connection failed mid-download: {exc}") from exc
        finally:
            response.close()  # type: ignore[attr-defined]


def fetcher_for(repository: str) -> tuple[FetcherInterface, str, str]:
    """``(fetcher, metadata base URL, targets base URL)`` for a folder path or an http(s) URL."""
    if repository.startswith(("http://", "https://")):
        base = repository.rstrip("/")
        return HttpMirrorFetcher(), f"{base}/metadata/", f"{base}/targets/"
    root = Path(repository)
    return UsbFolderFetcher(root), f"{USB_SCHEME}repo/metadata/", f"{USB_SCHEME}repo/targets/"
