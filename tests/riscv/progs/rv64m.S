#include "test.h"
START
    TEST_RR(1, mul, 0x0000000000000001, 0xffffffffffffffff, 0xffffffffffffffff)
    TEST_RR(2, mulh, 0, 0xffffffffffffffff, 0xffffffffffffffff)
    TEST_RR(3, mulhu, 0xfffffffffffffffe, 0xffffffffffffffff, 0xffffffffffffffff)
    TEST_RR(4, mulhsu, 0xffffffffffffffff, 0xffffffffffffffff, 0xffffffffffffffff)
    TEST_RR(5, mulh, 0xc000000000000000, 0x8000000000000000, 0x7fffffffffffffff)
    TEST_RR(6, mulh, 0x4000000000000000, 0x8000000000000000, 0x8000000000000000)
    TEST_RR(7, mulhsu, 0xc000000000000000, 0x8000000000000000, 0x8000000000000000)
    TEST_RR(8, mulhu, 0x4000000000000000, 0x8000000000000000, 0x8000000000000000)
    /* division by zero */
    TEST_RR(10, div, 0xffffffffffffffff, 7, 0)
    TEST_RR(11, divu, 0xffffffffffffffff, 7, 0)
    TEST_RR(12, rem, 7, 7, 0)
    TEST_RR(13, remu, 7, 7, 0)
    /* signed overflow */
    TEST_RR(14, div, 0x8000000000000000, 0x8000000000000000, -1)
    TEST_RR(15, rem, 0, 0x8000000000000000, -1)
    /* rounding toward zero */
    TEST_RR(16, div, -2, -7, 3)
    TEST_RR(17, rem, -1, -7, 3)
    TEST_RR(18, div, -2, 7, -3)
    TEST_RR(19, rem, 1, 7, -3)
    TEST_RR(20, divu, 0x5555555555555553, -7, 3)
    TEST_RR(21, remu, 0, -7, 3)
    /* W forms: operands are the low 32 bits, results sign-extended */
    TEST_RR(30, mulw, 0xffffffff80000000, 0x40000000, 2)
    TEST_RR(31, mulw, 1, 0x1ffffffff, 0xffffffff)
    TEST_RR(32, divw, 0xffffffffffffffff, 5, 0)
    TEST_RR(33, divuw, 0xffffffffffffffff, 5, 0)
    TEST_RR(34, remw, 5, 0x100000005, 0)
    TEST_RR(35, remuw, 0xffffffff80000000, 0x80000000, 0)
    TEST_RR(36, divw, 0xffffffff80000000, 0x80000000, -1)
    TEST_RR(37, remw, 0, 0x80000000, -1)
    TEST_RR(38, divuw, 0x7fffffff, 0xfffffffe, 2)
    TEST_RR(39, divuw, 0xffffffffffffffff, 0xffffffff, 1)
    TEST_RR(40, remuw, 0xffffffff80000000, 0xffffffff80000000, 0xffffffff)
    TEST_RR(41, divw, -3, 0x1fffffff9, 2)
    TEST_RR(42, remw, -1, -7, 2)
    /* rd == rs */
    li gp, 50
    li a0, 6
    mul a0, a0, a0
    CHECK(a0, 36)
    j pass
PASS_FAIL
