"""Who a client is, to the limits that count per client (requests in flight, sign-in failures,
registrations): free of HTTP, so the services' rules may use it too."""

import ipaddress


def client_bucket(address: str) -> str:
    """What per-client limits count by: an IPv4 address, or the /64 an IPv6 address is in (one
    host commonly holds a whole /64, so counting by address would give it limits without end)."""
    if ":" not in address:  # IPv4 as the server gives it (or no address at all)
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
