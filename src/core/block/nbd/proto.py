"""The NBD protocol's numbers and wire structures (NetworkBlockDevice's proto.md).

Only the fixed newstyle handshake is spoken (what qemu-nbd and QEMU's client use);
all integers are big-endian.
"""

from __future__ import annotations

import socket
import struct

from vmforge.errors import VmforgeError

__all__ = ["NbdError", "NbdProtocolError", "recv_exact", "send_all"]

NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# handshake flags (server) and client flags
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

# options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# option replies
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

# NBD_REP_INFO types
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# transmission flags
TF_HAS_FLAGS = 1 << 0
TF_READ_ONLY = 1 << 1
TF_SEND_FLUSH = 1 << 2
TF_SEND_FUA = 1 << 3
TF_ROTATIONAL = 1 << 4
TF_SEND_TRIM = 1 << 5
TF_SEND_WRITE_ZEROES = 1 << 6
TF_SEND_DF = 1 << 7
TF_CAN_MULTI_CONN = 1 << 8
TF_SEND_CACHE = 1 << 10
TF_SEND_FAST_ZERO = 1 << 11

# commands and their flags
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

# structured reply chunks
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

# base:allocation flags
STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1
BASE_ALLOCATION = "base:allocation"

# errors (the protocol's numbers, Linux's values)
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

#: the default port (IANA)
NBD_DEFAULT_PORT = 10809
#: the largest READ/WRITE payload served or sent (QEMU's NBD_MAX_BUFFER_SIZE)
MAX_BUFFER = 32 << 20
#: the longest option payload taken (QEMU's NBD_MAX_STRING_SIZE is 4096 per string)
MAX_OPTION = 64 << 10
#: the longest export name (NBD_MAX_STRING_SIZE)
MAX_STRING = 4096

REQUEST = struct.Struct(">IHHQQI")             # magic, flags, type, handle, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")           # magic, error, handle
STRUCTURED_REPLY = struct.Struct(">IHHQI")     # magic, flags, type, handle, length
OPTION = struct.Struct(">QII")                 # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")          # magic, option, reply type, length
EXPORT_INFO = struct.Struct(">HQH")            # NBD_INFO_EXPORT, size, transmission flags
BLOCK_SIZE_INFO = struct.Struct(">HIII")       # NBD_INFO_BLOCK_SIZE, min, preferred, max


class NbdError(VmforgeError):
    """An NBD failure: refused by the peer, or a connection that ended."""


class NbdProtocolError(NbdError):
    """The peer broke the protocol (bad magic, a reply that does not fit)."""


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """``n`` bytes from ``sock``; NbdError if the peer closes first."""
    buf = bytearray(n)
    recv_into(sock, memoryview(buf))
    return buf


def recv_into(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``; NbdError if the peer closes first."""
    got = 0
    n = len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise NbdError("connection closed by the peer")
        got += k


def send_all(sock: socket.socket, *parts: bytes | bytearray | memoryview) -> None:
    """Send ``parts`` in order, as one write where the kernel takes it."""
    if len(parts) == 1:
        sock.sendall(parts[0])
        return
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]
