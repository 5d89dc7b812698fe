"""Optional download of a published archive: resumable, verified, cached."""

from __future__ import annotations

import http.client
import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pipeline.stages.data.cache import file_digest
from pipeline.stages.data.dataset import DataError

log = logging.getLogger(__name__)


def fetch(
    url: str,
    folder: Path,
    expected_size: int | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """The file at `url`, downloaded once into `folder` and checked against size and sha256.

    An interrupted download resumes from its `.part` file (HTTP Range). Offline, or on a
    mismatch, the error says where to put the file by hand.
    """
    name = Path(urlparse(url).path).name or "download"
    target = folder / name
    if target.exists():
        _verify(target, expected_size, sha256)
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a download needs somewhere to go: no going on without the cache
        raise DataError(
            f"cannot keep the download of {url} in {folder} ({exc.strerror or exc}): set "
            "data.cache_dir to a writable folder, or download it by hand and set data.path"
        ) from None
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            if have and not resumed:
                log.info("%s does not resume downloads; starting again", url)
            log.info("Downloading %s to %s", url, target)
            try:
                with part.open("ab" if resumed else "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (http.client.HTTPException, OSError) as exc:
                raise DataError(
                    f"download of {url} broke off at {part.stat().st_size:,} bytes ({exc}); "
                    "run again to resume"
                ) from None
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have and expected_size == have):  # 416: .part is whole
            raise DataError(_manual_hint(url, target, expected_size, f"HTTP {exc.code}")) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(_manual_hint(url, target, expected_size, str(reason))) from None
    try:
        _verify(part, expected_size, sha256)
    except DataError:
        part.unlink()  # a wrong file: the next attempt must not resume it
        raise
    part.replace(target)
    return target


def _verify(path: Path, expected_size: int | None, sha256: str | None) -> None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataError(
            f"{path.name} has {size:,} bytes, expected {expected_size:,} (data.expected_size): "
            "check data.url, or delete the file to download it again"
        )
    if sha256 is not None and (found := file_digest(path)) != sha256.lower():
        raise DataError(
            f"{path.name} has sha256 {found}, expected {sha256} (data.sha256): "
            "check data.url, or delete the file to download it again"
        )


def _manual_hint(url: str, target: Path, expected_size: int | None, reason: str) -> str:
    size = f" ({expected_size:,} bytes)" if expected_size else ""
    return (
        f"cannot download {url}: {reason}. Without network, place the file{size} at "
        f"{target}, or point data.path at a local copy"
    )
