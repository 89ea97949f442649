"""Assembly pieces of the Sv39 tests: page tables at ``root``/``l1``/``l0``, then S-mode.

``SV39_TABLES`` builds, with s0 = root, s1 = l1, s2 = l0: an identity gigapage at
0x80000000 (root[2]) and 4 KiB pages at 0x40000000 through l1[0] -> l0 (the test
fills l0).  ``SV39_ENTER`` turns paging on and goes to ``s_code`` in S-mode;
``SV39_ROOTS`` reserves the three tables (page-aligned: put it after a
``.balign 4096``).  ``SV39_PAGES_AB``: two data pages, ``page_a`` holding 0xaa
and ``page_b`` 0xbb, and the alignment after them.
"""

SV39_TABLES = r"""
    .option norvc
    la s0, root
    la s1, l1
    la s2, l0
    srli t0, s1, 12; slli t0, t0, 10; ori t0, t0, 1; sd t0, 8(s0)     # [1] -> l1
    li t0, (0x80000 << 10) | 0xcf; sd t0, 16(s0)                      # [2] identity
    srli t0, s2, 12; slli t0, t0, 10; ori t0, t0, 1; sd t0, 0(s1)     # l1[0] -> l0
"""

SV39_ENTER = r"""
    srli t0, s0, 12; li t1, 8 << 60; or t0, t0, t1; csrw satp, t0
    li t0, 3 << 11; csrc mstatus, t0
    li t0, 1 << 11; csrs mstatus, t0
    la t0, s_code; csrw mepc, t0
    mret
"""

SV39_ROOTS = r"""
root: .fill 512, 8, 0
l1: .fill 512, 8, 0
l0: .fill 512, 8, 0
"""

SV39_PAGES_AB = r"""
    .balign 4096
page_a: .dword 0xaa
    .balign 4096
page_b: .dword 0xbb
    .balign 4096
"""
