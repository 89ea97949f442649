# Constants shared by the parts of the RISC-V hart (included first by riscv.pyx).

cdef extern from *:
    """
    #define RV_MSTATUS_SIE  (1ULL << 1)
    #define RV_MSTATUS_MIE  (1ULL << 3)
    #define RV_MSTATUS_SPIE (1ULL << 5)
    #define RV_MSTATUS_MPIE (1ULL << 7)
    #define RV_MSTATUS_SPP  (1ULL << 8)
    #define RV_MSTATUS_MPP  (3ULL << 11)
    #define RV_MSTATUS_FS   (3ULL << 13)
    #define RV_MSTATUS_XS   (3ULL << 15)
    #define RV_MSTATUS_MPRV (1ULL << 17)
    #define RV_MSTATUS_SUM  (1ULL << 18)
    #define RV_MSTATUS_MXR  (1ULL << 19)
    #define RV_MSTATUS_TVM  (1ULL << 20)
    #define RV_MSTATUS_TW   (1ULL << 21)
    #define RV_MSTATUS_TSR  (1ULL << 22)
    #define RV_MSTATUS_UXL  (3ULL << 32)
    #define RV_MSTATUS_SXL  (3ULL << 34)
    #define RV_MSTATUS_SD   (1ULL << 63)
    #define RV_PTE_V (1ULL << 0)
    #define RV_PTE_R (1ULL << 1)
    #define RV_PTE_W (1ULL << 2)
    #define RV_PTE_X (1ULL << 3)
    #define RV_PTE_U (1ULL << 4)
    #define RV_PTE_G (1ULL << 5)
    #define RV_PTE_A (1ULL << 6)
    #define RV_PTE_D (1ULL << 7)
    #define RV_INT_FLAG (1ULL << 63)
    """
    uint64_t MSTATUS_SIE "RV_MSTATUS_SIE"
    uint64_t MSTATUS_MIE "RV_MSTATUS_MIE"
    uint64_t MSTATUS_SPIE "RV_MSTATUS_SPIE"
    uint64_t MSTATUS_MPIE "RV_MSTATUS_MPIE"
    uint64_t MSTATUS_SPP "RV_MSTATUS_SPP"
    uint64_t MSTATUS_MPP "RV_MSTATUS_MPP"
    uint64_t MSTATUS_FS "RV_MSTATUS_FS"
    uint64_t MSTATUS_XS "RV_MSTATUS_XS"
    uint64_t MSTATUS_MPRV "RV_MSTATUS_MPRV"
    uint64_t MSTATUS_SUM "RV_MSTATUS_SUM"
    uint64_t MSTATUS_MXR "RV_MSTATUS_MXR"
    uint64_t MSTATUS_TVM "RV_MSTATUS_TVM"
    uint64_t MSTATUS_TW "RV_MSTATUS_TW"
    uint64_t MSTATUS_TSR "RV_MSTATUS_TSR"
    uint64_t MSTATUS_UXL "RV_MSTATUS_UXL"
    uint64_t MSTATUS_SXL "RV_MSTATUS_SXL"
    uint64_t MSTATUS_SD "RV_MSTATUS_SD"
    uint64_t PTE_V "RV_PTE_V"
    uint64_t PTE_R "RV_PTE_R"
    uint64_t PTE_W "RV_PTE_W"
    uint64_t PTE_X "RV_PTE_X"
    uint64_t PTE_U "RV_PTE_U"
    uint64_t PTE_G "RV_PTE_G"
    uint64_t PTE_A "RV_PTE_A"
    uint64_t PTE_D "RV_PTE_D"
    uint64_t INT_FLAG "RV_INT_FLAG"

cdef enum:
    PRV_U = 0
    PRV_S = 1
    PRV_M = 3

# OP_WFI's sub-operation (rs3): wfi, or pause (Zihintpause), the hint a spin-wait
# loop gives (Linux's cpu_relax): both are hints to wait, neither is compiled
cdef enum:
    WFI_WAIT = 0
    WFI_PAUSE = 1

# why run() returned
cdef enum:
    STOP_NONE = 0
    STOP_BUDGET = 1
    STOP_WFI = 2
    STOP_BREAKPOINT = 3
    STOP_EXCEPTION = 4
    STOP_PYEXC = 5
    STOP_REQUEST = 6
    STOP_WATCHPOINT = 7

# interrupt bits of mip/mie
cdef enum:
    IRQ_SSI = 1
    IRQ_MSI = 3
    IRQ_STI = 5
    IRQ_MTI = 7
    IRQ_SEI = 9
    IRQ_MEI = 11

cdef enum:
    MIP_SSIP = 1 << 1
    MIP_MSIP = 1 << 3
    MIP_STIP = 1 << 5
    MIP_MTIP = 1 << 7
    MIP_SEIP = 1 << 9
    MIP_MEIP = 1 << 11
    S_INTS = MIP_SSIP | MIP_STIP | MIP_SEIP
    ALL_INTS = S_INTS | MIP_MSIP | MIP_MTIP | MIP_MEIP
