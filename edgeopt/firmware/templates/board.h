/* board.h: what edgeopt's TFLite Micro example needs from the board (startup.c implements it for the
   MPS2 boards QEMU emulates; on your board, SysTick or DWT->CYCCNT gives the same counter). */
#ifndef EDGEOPT_BOARD_H
#define EDGEOPT_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Iterations of the calibration loop (two instructions each). */
#define BOARD_CALIBRATION_LOOPS 1000000u

/* Starts the tick counter: SysTick on the core clock (on a board, ticks are core cycles; under QEMU,
   virtual-clock ticks, which -icount ties to executed instructions). */
void board_ticks_start(void);
uint64_t board_ticks(void);
/* Ticks taken by 2 * BOARD_CALIBRATION_LOOPS instructions. */
uint64_t board_calibration_ticks(void);
/* The stack's high-water mark and size, in bytes. */
uint32_t board_stack_used(void);
uint32_t board_stack_size(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEOPT_BOARD_H */
