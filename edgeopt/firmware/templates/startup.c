/* startup.c: reset and fault handling for edgeopt's TFLite Micro example on the Arm MPS2 boards that
   QEMU emulates (Cortex-M4, M7 and M33). Output goes through semihosting (newlib's rdimon), so the
   host running QEMU sees printf and the exit status.

   On your board, its vendor's startup file replaces this one: what this file does that yours must do
   too is enable the FPU before any float instruction, copy .data, zero .bss and run the C++
   constructors before main(). */

#include <stdint.h>
#include <stdlib.h>

#include "board.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __StackTop, __StackLimit;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

/* With -nostartfiles nothing else defines these (the C++ runtime and __libc_init_array use them). */
void *__dso_handle = 0;
void _init(void) {}
void _fini(void) {}

#define STACK_PAINT 0xC5C5C5C5u
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

/* ---- semihosting without the C library: usable from a fault handler ---- */
static int semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static void say(const char *s) { semihost(0x04 /* SYS_WRITE0 */, s); }

static void say_hex(uint32_t v) {
  char buf[11] = "0x";
  for (int i = 0; i < 8; ++i) buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xF];
  buf[10] = 0;
  say(buf);
}

static void die(int code) {
  /* SYS_EXIT_EXTENDED: the exit status reaches QEMU's own exit status. */
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  semihost(0x20, block);
  for (;;) {
  }
}

/* ---- the cycle counter: SysTick on the core clock, widened to 64 bits by counting wraps ---- */
static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { ++systick_wraps; }

void board_ticks_start(void) {
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 0x7u; /* core clock, wrap interrupt, enabled */
}

uint64_t board_ticks(void) {
  uint32_t wraps, value;
  do { /* a wrap between the two reads would mix two periods */
    wraps = systick_wraps;
    value = SYST_CVR;
  } while (wraps != systick_wraps);
  return (uint64_t)wraps * 0x01000000u + (0x00FFFFFFu - value);
}

/* A loop of exactly 2 * BOARD_CALIBRATION_LOOPS instructions (subs, bne), timed with board_ticks():
   under QEMU's -icount the ratio turns ticks into executed instructions. */
uint64_t board_calibration_ticks(void) {
  uint32_t n = BOARD_CALIBRATION_LOOPS;
  uint64_t t0 = board_ticks();
  __asm__ volatile(
      "1: subs %0, %0, #1\n"
      "   bne 1b\n"
      : "+r"(n)
      :
      : "cc");
  return board_ticks() - t0;
}

/* Bytes of stack ever used: the painted words the stack never overwrote are still intact. */
uint32_t board_stack_used(void) {
  const uint32_t *p = &__StackLimit;
  while (p < &__StackTop && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)p);
}

uint32_t board_stack_size(void) { return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)&__StackLimit); }

/* ---- reset ---- */
void board_reset_c(void) {
  uint32_t *src = &__data_load__, *dst = &__data_start__;
  while (dst < &__data_end__) *dst++ = *src++;
  for (dst = &__bss_start__; dst < &__bss_end__; ++dst) *dst = 0;
  /* paint the stack below the current frame */
  uint32_t *sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t *p = &__StackLimit; p < sp - 16; ++p) *p = STACK_PAINT;
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

/* Enables the FPU (CP10 and CP11, full access) before any C code can use a float register. */
__attribute__((naked)) void Reset_Handler(void) {
  __asm__ volatile(
      "ldr r0, =0xE000ED88\n"
      "ldr r1, [r0]\n"
      "orr r1, r1, #(0xF << 20)\n"
      "str r1, [r0]\n"
      "dsb\n"
      "isb\n"
      "b board_reset_c\n");
}

/* ---- faults: say what happened and where, then stop with status 3 ---- */
void board_fault_c(uint32_t *frame, uint32_t exc_return, uint32_t ipsr) {
  say("edgeopt fault: exception ");
  say_hex(ipsr & 0x1FFu);
  say(" pc ");
  say_hex(frame[6]);
  say(" lr ");
  say_hex(frame[5]);
  say(" cfsr ");
  say_hex(SCB_CFSR);
  say(" hfsr ");
  say_hex(SCB_HFSR);
  say(" exc_return ");
  say_hex(exc_return);
  say("\n");
  die(3);
}

__attribute__((naked)) void Fault_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n"
      "ite eq\n"
      "mrseq r0, msp\n"
      "mrsne r0, psp\n"
      "mov r1, lr\n"
      "mrs r2, ipsr\n"
      "b board_fault_c\n");
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) const vector_t board_vectors[16 + 32] = {
    (vector_t)&__StackTop, /* initial stack pointer */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (Armv8-M) */
    0,
    0,
    0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
    /* external interrupts: none are enabled; a stray one is reported as a fault */
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
};
