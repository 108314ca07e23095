"""The key → slot function shared by every process (Redis Cluster's CRC16-XMODEM)."""

from binascii import crc_hqx

SLOT_COUNT = 16384
SLOT_MASK = SLOT_COUNT - 1


def key_slot(key: bytes) -> int:
    """Return the hash slot of ``key``, honouring ``{hash tags}`` exactly as Redis does.

    Only the bytes between the first ``{`` and the first ``}`` after it are hashed,
    provided at least one byte stands between them; otherwise the whole key is.
    """
    if 123 in key:  # b"{": an int membership test is a plain memchr
        start = key.find(b"{")
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) & SLOT_MASK
