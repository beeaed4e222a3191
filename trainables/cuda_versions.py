"""Which NVIDIA driver a CUDA build of torch needs, and what the cluster's machine images carry.

A CUDA build of torch runs only on a driver at least as new as its CUDA release wants: an older
driver makes `torch.cuda.is_available()` False (with a warning nobody reads in a Ray worker),
and the trial would train on the CPU. `trainables/device.py` names the wanted driver in its
one-line error; `tests/test_cluster_yaml.py` checks that cluster.yaml's AMI and Docker image
pair with the CUDA build of the pinned torch.

Every number carries its source. Read offline (no network here) in December 2026:
* MIN_DRIVER: NVIDIA CUDA Toolkit release notes, table "CUDA Toolkit and Corresponding Driver
  Versions", Linux x86_64, the GA row of each release
  (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/). CUDA 11.2's row was read in a
  copy of that table; 13.0's number (580.65.06) matches every third-party requirement text
  quoting it; the other rows are quoted from the same table without a fresh read.
* AMI_DRIVERS: AWS Deep Learning AMI release notes
  (https://docs.aws.amazon.com/dlami/latest/devguide/appendix-ami-release-notes.html) and
  Ray's AWS launcher source (ray/autoscaler/_private/aws/config.py, ray 2.60.0).
* Ray's images: `rayproject/ray:<ray>-py<xy>-cu<XYZ>` tags come from Ray's CI build matrix
  (ci/ray_ci/docker_container.py: PLATFORMS_RAY lists cu12.8.1 for Python 3.10-3.12, tagged
  -cu128); that the 2.60.0 tag exists could not be checked offline.
"""

from __future__ import annotations

# torch.version.cuda -> the oldest Linux driver its CUDA release supports (GA row).
MIN_DRIVER = {
    "13.0": "580.65.06",  # torch 2.14.1 from PyPI is +cu130 (torch.version.cuda == "13.0")
    "12.8": "570.26",
    "12.6": "560.28.03",
    "12.4": "550.54.14",
    "12.1": "530.30.02",
    "11.8": "520.61.05",
    "11.2": "460.27.03",  # the driver of Ray's default AMI (see AMI_DRIVERS)
}

# An EC2 ImageId cluster.yaml may name -> the NVIDIA driver it boots with (the oldest one it can
# resolve to) and where that number comes from.
AMI_DRIVERS = {
    # Ray's `latest_dlami` (and an empty ImageId) is not the latest DLAMI: ray 2.60.0's
    # config.py maps it to a fixed per-region id of "AWS Deep Learning AMI (Ubuntu 18.04) V71.0",
    # commented there as "V71.0 has CUDA 11.2" (driver 460.x, too old for any CUDA 12/13 torch).
    "latest_dlami": ("460.27.03", "ray 2.60.0 aws/config.py DEFAULT_AMI: DLAMI V71.0, CUDA 11.2"),
    # AWS's parameter for the current "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu
    # 22.04)", x86_64 (G4dn among its instance types); EC2 resolves `resolve:ssm:` at launch in
    # each region. The DLAMI Base releases read here carry driver 580.95.05 (2025-10-31) and
    # newer: 580.105.08 (single-CUDA x86_64, 2026-01-02), 595.71.05 (2026-07-24), 595.91.07
    # (2026-10-06). "latest" only moves forward; a newer driver runs older CUDA builds.
    "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id": (
        "580.95.05",
        "DLAMI Base release notes 2025-10-31 .. 2026-10-06",
    ),
}


def version_tuple(version: str) -> tuple[int, ...]:
    """'580.65.06' -> (580, 65, 6); compares driver versions numerically."""
    return tuple(int(part) for part in version.split("."))


def min_driver(cuda: str | None) -> str | None:
    """The oldest driver for a CUDA version as torch reports it ("13.0"); None for a CPU build
    (cuda None) or a CUDA release this table does not list."""
    return MIN_DRIVER.get(cuda) if cuda else None


def driver_runs(driver: str, cuda: str) -> bool:
    """Whether `driver` is at least the one CUDA `cuda` wants; KeyError for an unlisted CUDA."""
    return version_tuple(driver) >= version_tuple(MIN_DRIVER[cuda])


def image_cuda(image: str) -> str | None:
    """The CUDA version of a `rayproject/ray:<ray>-py<xy>-cu<XYZ>` tag ("cu128" -> "12.8");
    None for a tag without one (`-gpu` is an alias that moves between CUDA versions)."""
    tag = image.rpartition(":")[2]
    for part in tag.split("-"):
        if part.startswith("cu") and part[2:].isdigit() and len(part) >= 5:
            digits = part[2:]
            return f"{int(digits[:-1])}.{digits[-1]}"
    return None
