"""Fashion-MNIST, prepared for TFDS on first use from Debian's `dataset-fashion-mnist` files
(checked by their decoded contents; docs/choices.md, "Data"), else by TFDS's download.
"""
import gzip
import hashlib
import os
import socket
import tempfile
import threading
import urllib.parse
import zlib

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# sha256 of each original Fashion-MNIST file after gunzip (idx header + pixels or
# labels), i.e. of the decoded split; the same for Zalando's .gz files and Debian's.
DIGESTS = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DOWNLOAD_PROBE_SECONDS = 5.0  # how long to wait for the download host before giving up
_HOW_TO_GET = ("install Debian's package (`apt-get install -y dataset-fashion-mnist`, files in "
               f"{DEBIAN_DIR}; `bash launch/setup.sh` does it), or run once with network "
               "access so that TFDS downloads fashion_mnist, or put the four original .gz files "
               "in a folder given as --config.dataset.manual_dir")


def verify_sources(manual_dir: str) -> dict:
  """The four .gz files in `manual_dir`, checked to decode to the original data (else a
  ValueError naming the file) -> {file name: (size, sha256) of the .gz file}."""
  found = {}
  for name, want in DIGESTS.items():
    path = os.path.join(manual_dir, name)
    with open(path, "rb") as f:
      blob = f.read()
    try:
      decoded = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
      raise ValueError(f"Fashion-MNIST source file {path} is not a readable .gz file ({e}); "
                       f"replace it with the original: {_HOW_TO_GET}") from None
    got = hashlib.sha256(decoded).hexdigest()
    if got != want:
      what = ("training " if name.startswith("train") else "test ") + name.split("-")[1]
      raise ValueError(
          f"Fashion-MNIST source file {path} does not hold the original {what} "
          f"(decoded sha256 {got[:16]}..., the original's {want[:16]}...): it is corrupt or "
          f"altered, and a benchmark on it would silently differ; replace it with the original: "
          f"{_HOW_TO_GET}")
    found[name] = (len(blob), hashlib.sha256(blob).hexdigest())
  return found


def _prepare_from_files(builder, manual_dir: str) -> None:
  """TFDS's own Fashion-MNIST builder, run on the verified files in `manual_dir`."""
  import tensorflow_datasets as tfds
  found = verify_sources(manual_dir)
  base = type(builder)
  UrlInfo = tfds.download.checksums.UrlInfo  # pylint: disable=invalid-name
  # The checksums of exactly the files just verified, for this one build: TFDS
  # still checks that what it reads is those files. skip_registration: TFDS's
  # registered `fashion_mnist` stays the one every later run reads with.
  infos = {urllib.parse.urljoin(base.URL, name): UrlInfo(size=size, checksum=sha, filename=name)
           for name, (size, sha) in found.items()}

  class VerifiedFashionMNIST(base, skip_registration=True):
    __module__ = base.__module__  # so the prepared dataset_info.json is TFDS's own
    name = base.name
    url_infos = infos  # a plain class attribute over TFDS's `url_infos` classproperty

  with tempfile.TemporaryDirectory(prefix="sage_jax_fmnist_") as scratch:
    VerifiedFashionMNIST(data_dir=builder.data_dir_root,
                         file_format=builder.info.file_format).download_and_prepare(
        download_dir=scratch,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def _probe(url: str, seconds: float):
  """None when `url`'s host answers a TCP connection within `seconds` (look-up included) or
  a proxy is configured (TFDS goes through it), else why not."""
  if any(os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                     "all_proxy", "ALL_PROXY")):
    return None
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  answer = []

  def connect():
    try:
      socket.create_connection((parts.hostname, port), timeout=seconds).close()
      answer.append(None)
    except OSError as e:
      answer.append(f"{type(e).__name__}: {e}")

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(seconds)
  return answer[0] if answer else f"no answer from {parts.hostname}:{port} in {seconds:.0f} s"


def _download_and_prepare(builder, manual_dir: str, missing) -> None:
  """TFDS's ordinary download of fashion_mnist; one clear error when it cannot run."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import download_manager
  where = (f"Fashion-MNIST is not prepared under data_dir={str(builder.data_dir_root)!r}, its "
           f"source files are not in {manual_dir} (missing: {', '.join(missing)})")
  why = _probe(type(builder).URL, DOWNLOAD_PROBE_SECONDS)
  if why is None:
    try:
      builder.download_and_prepare()
      return
    except (OSError, tfds.download.DownloadError, download_manager.NonMatchingChecksumError) as e:
      why = f"{type(e).__name__}: {e}"
  why = " ".join(str(why).split())[:300]
  raise FileNotFoundError(f"{where}, and TFDS could not download it ({why}); {_HOW_TO_GET}")


def prepare(builder, manual_dir: str):
  """The unprepared fashion_mnist `builder`, prepared from `manual_dir` or downloaded ->
  a builder reading the prepared dataset."""
  import tensorflow_datasets as tfds
  manual = os.path.expanduser(manual_dir)
  missing = [f for f in DIGESTS if not os.path.isfile(os.path.join(manual, f))]
  if missing:
    _download_and_prepare(builder, manual, missing)
    return builder
  _prepare_from_files(builder, manual)
  return tfds.builder(builder.name, data_dir=builder.data_dir_root)
