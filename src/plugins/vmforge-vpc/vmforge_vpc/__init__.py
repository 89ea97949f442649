"""vmforge-vpc: the VHD format of Virtual PC and Hyper-V (QEMU's ``vpc``)."""

from vmforge_vpc.driver import Vpc

__all__ = ["Vpc"]
