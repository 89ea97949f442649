"""NBD image names, as QEMU's ``nbd`` block driver takes them.

- ``nbd://HOST[:PORT]/EXPORT`` (also ``nbd+tcp://``), ``nbd+unix:///EXPORT?socket=PATH``
- QEMU's older ``nbd:HOST:PORT[:exportname=NAME]`` and ``nbd:unix:PATH[:exportname=NAME]``
- ``json:{"driver":"nbd","server":{"type":"inet","host":H,"port":P},"export":E}`` (or
  ``{"type":"unix","path":S}``; the legacy flat ``host``/``port``/``path`` keys too), or
  the same under ``"file"`` of a ``"driver":"raw"`` node.

:func:`parse_nbd_name` gives an :class:`NbdAddress` whose ``filename`` is the
name QEMU shows for it (``nbd_refresh_filename``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from vmforge.block.nbd.proto import NBD_DEFAULT_PORT, NbdError

__all__ = ["NbdAddress", "is_nbd_name", "parse_nbd_name", "socket_address"]

_URI_SCHEMES = ("nbd://", "nbd+tcp://", "nbd+unix://")


@dataclass(frozen=True)
class NbdAddress:
    """Where an NBD export is: a TCP host and port or a UNIX socket, and its name."""

    export: str
    host: str | None = None
    port: int = NBD_DEFAULT_PORT
    path: str | None = None

    @property
    def filename(self) -> str:
        if self.path is not None:
            if self.export:
                return f"nbd+unix:///{self.export}?socket={self.path}"
            return f"nbd+unix://?socket={self.path}"
        if self.export:
            return f"nbd://{self.host}:{self.port}/{self.export}"
        return f"nbd://{self.host}:{self.port}"

    def connect(self, timeout: float | None = 30.0) -> socket.socket:
        """A connected stream socket (no handshake yet)."""
        try:
            if self.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(self.path)
            else:
                sock = socket.create_connection((self.host or "localhost", self.port), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise NbdError(f"Failed to connect to '{self._where()}': "
                           f"{exc.strerror or exc}") from None
        sock.settimeout(None)
        return sock

    def _where(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def is_nbd_name(name: str) -> bool:
    """Whether ``name`` names an NBD export rather than a file."""
    if name.startswith(_URI_SCHEMES) or name.startswith("nbd:"):
        return True
    if name.startswith("json:"):
        import json

        try:
            tree = json.loads(name[5:])
        except ValueError:
            return False
        return isinstance(tree, dict) and _nbd_node(tree) is not None
    return False


def _nbd_node(tree: dict[str, Any]) -> dict[str, Any] | None:
    if tree.get("driver") == "nbd" or tree.get("file.driver") == "nbd":
        return tree
    file = tree.get("file")
    if isinstance(file, dict) and file.get("driver") == "nbd":
        return file
    return None


def parse_nbd_name(name: str) -> NbdAddress:
    """The export ``name`` names; NbdError (QEMU's words where it has them) if it is
    not one."""
    if name.startswith("json:"):
        return _from_json(name)
    if name.startswith(_URI_SCHEMES):
        return _from_uri(name)
    if name.startswith("nbd:"):
        return _from_legacy(name)
    raise NbdError(f"'{name}' is not an NBD name")


def _from_uri(name: str) -> NbdAddress:
    import urllib.parse

    uri = urllib.parse.urlsplit(name)
    export = urllib.parse.unquote(uri.path[1:] if uri.path.startswith("/") else uri.path)
    query = urllib.parse.parse_qs(uri.query, keep_blank_values=True)
    if uri.scheme == "nbd+unix":
        sockets = query.get("socket")
        if uri.netloc or not sockets or len(query) != 1:
            raise NbdError("nbd+unix:// needs ?socket=PATH and no host")
        return NbdAddress(export, path=sockets[0])
    if query:
        raise NbdError(f"Could not open '{name}': the nbd:// scheme takes no query")
    host = uri.hostname
    if not host:
        raise NbdError(f"Could not open '{name}': no host in the NBD URI")
    try:
        port = uri.port or NBD_DEFAULT_PORT
    except ValueError:
        raise NbdError(f"Could not open '{name}': bad port in the NBD URI") from None
    return NbdAddress(export, host=host, port=port)


def _from_legacy(name: str) -> NbdAddress:
    rest, _, export = name[4:].partition(":exportname=")
    if rest.startswith("unix:"):
        return NbdAddress(export, path=rest[5:])
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise NbdError(f"Could not open '{name}': expected nbd:HOST:PORT or nbd:unix:PATH")
    return NbdAddress(export, host=host, port=int(port))


def _from_json(name: str) -> NbdAddress:
    import json

    try:
        tree = json.loads(name[5:])
    except ValueError as exc:
        raise NbdError(f"Could not open '{name}': Could not parse the JSON options: "
                       f"{exc}") from None
    node = _nbd_node(tree) if isinstance(tree, dict) else None
    if node is None:
        raise NbdError(f"Could not open '{name}': not an nbd node")
    flat: dict[str, Any] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value

    flatten("", node)
    if node is tree and "file.driver" in flat:       # a flat {"file.driver": "nbd"}
        flat = {k[5:]: v for k, v in flat.items() if k.startswith("file.")}
    export = str(flat.get("export", ""))
    return socket_address({k[7:]: v for k, v in flat.items() if k.startswith("server.")}
                          or {k: v for k, v in flat.items() if k in ("host", "port", "path")},
                          export)


def socket_address(server: dict[str, Any], export: str = "") -> NbdAddress:
    """QAPI's SocketAddress (``type`` inet/unix and its members; ``type`` may be left
    out when ``path`` or ``host`` say which) as an :class:`NbdAddress`."""
    kind = server.get("type") or ("unix" if "path" in server else "inet")
    if kind == "unix":
        path = server.get("path")
        if not isinstance(path, str) or not path:
            raise NbdError("Parameter 'path' is missing")
        return NbdAddress(export, path=path)
    if kind != "inet":
        raise NbdError(f"Parameter 'type' does not accept value '{kind}'")
    host = server.get("host")
    if not isinstance(host, str) or not host:
        raise NbdError("Parameter 'host' is missing")
    port = server.get("port", str(NBD_DEFAULT_PORT))
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise NbdError(f"Parameter 'port' expects a port number, not '{port}'") from None
    return NbdAddress(export, host=host, port=number)
