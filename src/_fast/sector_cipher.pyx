# cython: language_level=3, boundscheck=False, wraparound=False
"""Disk-sector encryption over OpenSSL's libcrypto (EVP), for LUKS.

One cipher context is keyed once per direction; each sector only resets the IV
(or XTS tweak), computed from its 512-byte sector number as dm-crypt and QEMU
do (``plain``: 32 bits, ``plain64``: 64 bits, ``essiv``: the 64-bit number
encrypted in ECB with a second key).  The loop over sectors runs in C without
the GIL.  Each call works on its own copy of the keyed contexts, so threads may
share one :class:`EvpSectorCipher`.

Nothing here logs, formats or keeps a copy of a key (OpenSSL holds the key
schedules, cleansed when the object is freed).
"""

from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER *EVP_CIPHER_fetch(void *libctx, const char *name, const char *props)
    void EVP_CIPHER_free(EVP_CIPHER *cipher)
    int EVP_CIPHER_get_key_length(const EVP_CIPHER *cipher)
    int EVP_CIPHER_get_iv_length(const EVP_CIPHER *cipher)
    const EVP_CIPHER *EVP_CIPHER_CTX_get0_cipher(const EVP_CIPHER_CTX *ctx)
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_CIPHER_CTX_copy(EVP_CIPHER_CTX *out, const EVP_CIPHER_CTX *inp)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX *ctx, int pad)
    int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                          const unsigned char *key, const unsigned char *iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                         const unsigned char *inp, int inl)

cdef extern from "openssl/err.h" nogil:
    void ERR_clear_error()

cdef extern from "openssl/provider.h" nogil:
    ctypedef struct OSSL_LIB_CTX:
        pass
    ctypedef struct OSSL_PROVIDER:
        pass
    OSSL_LIB_CTX *OSSL_LIB_CTX_new()
    OSSL_PROVIDER *OSSL_PROVIDER_load(OSSL_LIB_CTX *libctx, const char *name)

#: a library context of our own with OpenSSL's legacy provider (cast5), made on first
#: need: loading it into the default context would change what the whole process,
#: hashlib included, gets from OpenSSL
cdef OSSL_LIB_CTX *_legacy = NULL
cdef bint _legacy_tried = False


cdef OSSL_LIB_CTX *_legacy_ctx() noexcept:
    global _legacy, _legacy_tried
    if not _legacy_tried:
        _legacy_tried = True
        _legacy = OSSL_LIB_CTX_new()
        if _legacy != NULL and (OSSL_PROVIDER_load(_legacy, b"legacy") == NULL
                                or OSSL_PROVIDER_load(_legacy, b"default") == NULL):
            _legacy = NULL   # (left allocated: made once per process)
        ERR_clear_error()
    return _legacy

cdef enum:
    ECB, CBC, XTS, CTR
    PLAIN = 1, PLAIN64, ESSIV

#: chaining modes and IV generators, as :meth:`EvpSectorCipher.__cinit__` takes them
MODE_ECB, MODE_CBC, MODE_XTS, MODE_CTR = ECB, CBC, XTS, CTR
IV_PLAIN, IV_PLAIN64, IV_ESSIV = PLAIN, PLAIN64, ESSIV

DEF SECTOR = 512
DEF MAX_BLOCK = 32
#: bytes of sectors XTS in bulk takes at a time (their blocks' tweaks stay in the cache)
DEF XTS_PIECE = 16384


class EvpUnavailable(ValueError):
    """OpenSSL here lacks the cipher (or refused its key): use another implementation."""


cdef EVP_CIPHER_CTX *_keyed(bytes name, const uint8_t *key, int keylen, int enc) except NULL:
    """A context of cipher ``name`` keyed for one direction, padding off."""
    cdef EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, name, NULL)
    cdef EVP_CIPHER_CTX *ctx
    if c == NULL:
        ERR_clear_error()
        if _legacy_ctx() != NULL:
            c = EVP_CIPHER_fetch(<void *> _legacy, name, NULL)
    if c == NULL:
        ERR_clear_error()
        raise EvpUnavailable(f"OpenSSL has no cipher {name.decode()}")
    if EVP_CIPHER_get_key_length(c) != keylen:
        EVP_CIPHER_free(c)
        raise EvpUnavailable(f"OpenSSL's {name.decode()} takes another key length")
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL or EVP_CipherInit_ex(ctx, c, NULL, key, NULL, enc) != 1:
        EVP_CIPHER_CTX_free(ctx)
        EVP_CIPHER_free(c)
        ERR_clear_error()
        raise EvpUnavailable(f"OpenSSL refused the key of {name.decode()}")
    EVP_CIPHER_free(c)   # the context keeps its own reference
    EVP_CIPHER_CTX_set_padding(ctx, 0)
    return ctx


cdef EVP_CIPHER_CTX *_copy(EVP_CIPHER_CTX *ctx) noexcept:
    """A copy of ``ctx`` (keyed alike) for one call; NULL for NULL or on failure."""
    cdef EVP_CIPHER_CTX *out
    if ctx == NULL:
        return NULL
    out = EVP_CIPHER_CTX_new()
    if out != NULL and EVP_CIPHER_CTX_copy(out, ctx) != 1:
        EVP_CIPHER_CTX_free(out)
        return NULL
    return out


cdef class EvpSectorCipher:
    """Sectors of ``sector_size`` bytes (a short last piece allowed where the mode
    is) in OpenSSL cipher ``name`` (``b"aes-256-xts"``...) with ``mode`` and
    ``ivgen`` (the module's constants; ``ivgen`` 0 for ECB). ``essiv_name`` and
    ``essiv_key`` give the ESSIV cipher (ECB) and its key. Raises
    :class:`EvpUnavailable` when OpenSSL cannot do it."""

    cdef EVP_CIPHER_CTX *enc_ctx
    cdef EVP_CIPHER_CTX *dec_ctx
    cdef EVP_CIPHER_CTX *essiv_ctx
    # XTS in bulk: the two halves of the key as ECB contexts (NULL: sector by sector)
    cdef EVP_CIPHER_CTX *xts1_enc
    cdef EVP_CIPHER_CTX *xts1_dec
    cdef EVP_CIPHER_CTX *xts2_enc
    cdef int mode, ivgen, block, sector_size

    def __cinit__(self, bytes name not None, const uint8_t[::1] key not None, int mode,
                  int ivgen, int block, int sector_size, bytes essiv_name=None,
                  const uint8_t[::1] essiv_key=None):
        if not (0 < block <= MAX_BLOCK) or sector_size <= 0 or sector_size % SECTOR:
            raise ValueError("bad block or sector size")
        if mode not in (MODE_ECB, MODE_CBC, MODE_XTS, MODE_CTR):
            raise ValueError(f"bad mode {mode}")
        if (mode == MODE_ECB) != (ivgen == 0) or ivgen not in (0, IV_PLAIN, IV_PLAIN64,
                                                               IV_ESSIV):
            raise ValueError(f"bad IV generator {ivgen}")
        cdef bint is_essiv = ivgen == ESSIV
        cdef bint has_essiv = essiv_name is not None and essiv_key is not None
        if is_essiv != has_essiv:
            raise ValueError("essiv, and only essiv, takes essiv_name and essiv_key")
        self.mode, self.ivgen, self.block, self.sector_size = mode, ivgen, block, sector_size
        self.enc_ctx = _keyed(name, &key[0] if key.shape[0] else NULL, key.shape[0], 1)
        self.dec_ctx = _keyed(name, &key[0] if key.shape[0] else NULL, key.shape[0], 0)
        if mode != MODE_ECB and EVP_CIPHER_get_iv_length(
                EVP_CIPHER_CTX_get0_cipher(self.enc_ctx)) != block:
            raise EvpUnavailable(f"OpenSSL's {name.decode()} takes another IV length")
        if ivgen == IV_ESSIV:
            self.essiv_ctx = _keyed(essiv_name, &essiv_key[0], essiv_key.shape[0], 1)
        cdef uint16_t probe = 1
        cdef int half = key.shape[0] // 2
        if mode == MODE_XTS and block == 16 and name.endswith(b"-xts") \
                and (<uint8_t *> &probe)[0] == 1:   # (the tweak arithmetic: little-endian)
            ecb = name[:len(name) - 3] + b"ecb"
            try:
                self.xts1_enc = _keyed(ecb, &key[0], half, 1)
                self.xts1_dec = _keyed(ecb, &key[0], half, 0)
                self.xts2_enc = _keyed(ecb, &key[half], half, 1)
            except EvpUnavailable:
                self._drop_xts()

    cdef void _drop_xts(self) noexcept:
        EVP_CIPHER_CTX_free(self.xts1_enc)
        EVP_CIPHER_CTX_free(self.xts1_dec)
        EVP_CIPHER_CTX_free(self.xts2_enc)
        self.xts1_enc = self.xts1_dec = self.xts2_enc = NULL

    @property
    def bulk_xts(self):
        """Whether XTS runs in bulk (one ECB call for many sectors' blocks)."""
        return self.xts2_enc != NULL

    def __dealloc__(self):
        EVP_CIPHER_CTX_free(self.enc_ctx)
        EVP_CIPHER_CTX_free(self.dec_ctx)
        EVP_CIPHER_CTX_free(self.essiv_ctx)
        self._drop_xts()

    def crypt(self, uint64_t first_sector, const uint8_t[::1] src not None, bint encrypt):
        """``src`` (from 512-byte sector ``first_sector`` on) en- or decrypted, as
        new bytes."""
        cdef Py_ssize_t n = src.shape[0]
        out = PyBytes_FromStringAndSize(NULL, n)
        self._run(first_sector, &src[0] if n else NULL, <uint8_t *> PyBytes_AS_STRING(out),
                  n, encrypt)
        return out

    def crypt_into(self, uint64_t first_sector, const uint8_t[::1] src not None,
                   uint8_t[::1] dst not None, bint encrypt):
        """Like :meth:`crypt`, into ``dst`` (of ``src``'s length; may be ``src``)."""
        cdef Py_ssize_t n = src.shape[0]
        if dst.shape[0] != n:
            raise ValueError("src and dst differ in length")
        if n:
            self._run(first_sector, &src[0], &dst[0], n, encrypt)

    cdef int _run(self, uint64_t sector, const uint8_t *src, uint8_t *dst, Py_ssize_t n,
                  bint encrypt) except -1:
        cdef EVP_CIPHER_CTX *ctx = _copy(self.enc_ctx if encrypt else self.dec_ctx)
        cdef EVP_CIPHER_CTX *ess = _copy(self.essiv_ctx)
        cdef EVP_CIPHER_CTX *x1 = _copy(self.xts1_enc if encrypt else self.xts1_dec)
        cdef EVP_CIPHER_CTX *x2 = _copy(self.xts2_enc)
        cdef int err = 0
        cdef Py_ssize_t bulk = 0, units
        if ctx == NULL or (ess == NULL) != (self.essiv_ctx == NULL) \
                or (x1 == NULL) != (self.xts1_enc == NULL) \
                or (x2 == NULL) != (self.xts2_enc == NULL):
            err = 1
        if not err:
            with nogil:
                if x2 != NULL:   # whole sectors in bulk, a short last piece as before
                    units = n // self.sector_size
                    if n % self.sector_size % 16 == 0 and n % self.sector_size:
                        units += 1
                    bulk = min(units * self.sector_size, n)
                    err = self._xts_bulk(x1, x2, ess, sector, src, dst, bulk)
                    sector += units * (self.sector_size // SECTOR)
                if not err and bulk < n:
                    err = self._loop(ctx, ess, sector, src + bulk, dst + bulk, n - bulk)
        EVP_CIPHER_CTX_free(ctx)
        EVP_CIPHER_CTX_free(ess)
        EVP_CIPHER_CTX_free(x1)
        EVP_CIPHER_CTX_free(x2)
        if err:
            ERR_clear_error()
            if err == 2:
                raise ValueError(f"{n} bytes: a piece is not whole cipher blocks "
                                 f"({self.block} bytes) or is too short for the mode")
            raise MemoryError("OpenSSL failed to run the cipher")
        return 0

    cdef int _xts_bulk(self, EVP_CIPHER_CTX *k1, EVP_CIPHER_CTX *k2, EVP_CIPHER_CTX *ess,
                       uint64_t sector, const uint8_t *src, uint8_t *dst,
                       Py_ssize_t n) noexcept nogil:
        """XTS over ``n`` bytes of sectors (the last may be short, but whole 16-byte
        blocks), some sectors at a time (about 16 KiB, to stay in the cache): their
        tweaks in one ECB call (after ESSIV's, if any), each block XORed with its
        tweak, one ECB call over them all, XORed again (IEEE 1619 without ciphertext
        stealing)."""
        cdef Py_ssize_t per = max(1, XTS_PIECE // self.sector_size)
        cdef Py_ssize_t piece = per * self.sector_size
        cdef uint8_t *tw = <uint8_t *> malloc(per * 16 + piece)
        cdef uint8_t *blk = tw + per * 16   # every block's tweak
        cdef Py_ssize_t pos = 0, s, nsec, chunk, off, end, k
        cdef int outl, i, step = self.sector_size // SECTOR, r = 0
        cdef uint64_t num, lo, hi, carry, a, b
        if tw == NULL:
            return 1
        while pos < n:
            chunk = min(piece, n - pos)
            nsec = (chunk + self.sector_size - 1) // self.sector_size
            memset(tw, 0, nsec * 16)
            for s in range(nsec):
                num = sector + <uint64_t> (s * step)
                if self.ivgen == PLAIN:
                    num &= <uint64_t> 0xFFFFFFFF
                for i in range(8):
                    tw[16 * s + i] = <uint8_t> (num >> (8 * i))
            if ess != NULL and (EVP_CipherUpdate(ess, tw, &outl, tw, <int> (nsec * 16)) != 1
                                or outl != nsec * 16):
                r = 1
                break
            if EVP_CipherUpdate(k2, tw, &outl, tw, <int> (nsec * 16)) != 1 \
                    or outl != nsec * 16:
                r = 1
                break
            k = 0
            for s in range(nsec):
                memcpy(&lo, tw + 16 * s, 8)
                memcpy(&hi, tw + 16 * s + 8, 8)
                off = pos + s * self.sector_size
                end = min(off + self.sector_size, pos + chunk)
                while off < end:
                    memcpy(blk + k, &lo, 8)
                    memcpy(blk + k + 8, &hi, 8)
                    memcpy(&a, src + off, 8)
                    memcpy(&b, src + off + 8, 8)
                    a ^= lo
                    b ^= hi
                    memcpy(dst + off, &a, 8)
                    memcpy(dst + off + 8, &b, 8)
                    carry = hi >> 63   # the tweak times x in GF(2^128)
                    hi = (hi << 1) | (lo >> 63)
                    lo = (lo << 1) ^ (carry * 0x87)
                    off += 16
                    k += 16
            if EVP_CipherUpdate(k1, dst + pos, &outl, dst + pos, <int> chunk) != 1 \
                    or outl != chunk:
                r = 1
                break
            for k in range(0, chunk, 8):
                memcpy(&a, dst + pos + k, 8)
                memcpy(&b, blk + k, 8)
                a ^= b
                memcpy(dst + pos + k, &a, 8)
            pos += chunk
            sector += <uint64_t> (nsec * step)
        free(tw)
        return r

    cdef int _loop(self, EVP_CIPHER_CTX *ctx, EVP_CIPHER_CTX *ess, uint64_t sector,
                   const uint8_t *src, uint8_t *dst, Py_ssize_t n) noexcept nogil:
        """0, 1 (OpenSSL failed) or 2 (a piece the mode cannot take)."""
        cdef uint8_t iv[MAX_BLOCK]
        cdef uint8_t plain_iv[MAX_BLOCK]
        cdef Py_ssize_t pos = 0, unit
        cdef int outl, i, ivn
        cdef uint64_t num
        if self.mode == ECB:
            while pos < n:   # one call per 1 GiB (EVP takes an int length)
                unit = min(n - pos, 1 << 30)
                if EVP_CipherUpdate(ctx, dst + pos, &outl, src + pos, <int> unit) != 1:
                    return 1
                if outl != unit:
                    return 2
                pos += unit
            return 0
        ivn = min(self.block, 8)
        while pos < n:
            unit = min(n - pos, self.sector_size)
            memset(iv, 0, self.block)
            num = sector
            if self.ivgen == PLAIN:
                num = sector & <uint64_t> 0xFFFFFFFF
            for i in range(ivn):
                iv[i] = <uint8_t> (num >> (8 * i))
            if ess != NULL:
                for i in range(self.block):
                    plain_iv[i] = iv[i]
                if EVP_CipherUpdate(ess, iv, &outl, plain_iv, self.block) != 1 \
                        or outl != self.block:
                    return 1
            if EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) != 1:
                return 1
            if EVP_CipherUpdate(ctx, dst + pos, &outl, src + pos, <int> unit) != 1:
                return 2 if self.mode == XTS else 1
            if outl != unit:
                return 2
            pos += unit
            sector += self.sector_size // SECTOR
        return 0
