/*
 * edgeopt's instruction counter: a QEMU TCG plugin (user mode) that counts the guest instructions
 * executed between two markers, per emulated thread and per mnemonic.
 *
 * The guest marks a window with a syscall no program makes by accident: sched_get_priority_max()
 * with an invalid policy, MARK_MAGIC | code << 8 | window (code 1 opens the window, 2 closes it). The
 * syscall fails with EINVAL in the guest; this plugin sees it first. When a window closes, one JSON
 * line goes to the file given as ``out=PATH``:
 *
 *   {"window": 3, "threads": {"0": {"insns": N, "spin": S}, ...}, "mnemonics": {"fmla": N, ...}}
 *
 * ``spin`` counts the instructions of translation blocks that hold a YIELD or WFE (a thread pool's
 * wait loop) so that waiting can be told from work. Counting is per translation block (QEMU runs a
 * block to its end, bar faults), so the block's instructions are added each time it runs.
 *
 * QEMU's plugin interface is a C ABI: the declarations below are this plugin's own, of the few
 * functions it calls (their documented signatures, unchanged from QEMU 4.2 to 10). Debian ships no
 * qemu-plugin.h. The API level this file claims is given at build time (-DPLUGIN_API=N): edgeopt's
 * builder tries QEMU's minimum level when QEMU names one (edgeopt/arm/plugin.py).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PLUGIN_API
#define PLUGIN_API 1
#endif

#define EXPORT __attribute__((visibility("default")))

/* ---- the plugin interface (declarations of QEMU's exported symbols) ---------------------------- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
struct qemu_info_t_opaque;
enum qemu_plugin_cb_flags { CB_NO_REGS, CB_R_REGS, CB_RW_REGS };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                             uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                             uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);

EXPORT int qemu_plugin_version = PLUGIN_API;

/* ---- state ---------------------------------------------------------------------------------------- */
#define MAX_THREADS 64     /* emulated threads counted apart; later ones share the last slot */
#define MAX_MNEMONICS 4096 /* distinct mnemonics; beyond this they count as "?" */
#define MARK_SYSCALL 125   /* aarch64 __NR_sched_get_priority_max */
#define MARK_MAGIC 0x45440000u
#define MARK_MASK 0xffff0000u

typedef struct {
    uint32_t n;                 /* instructions in the block */
    uint32_t spin;              /* the block holds a YIELD or WFE */
    uint64_t runs[MAX_THREADS]; /* times each thread ran it, ever */
    uint64_t base[MAX_THREADS]; /* ... when the open window opened */
    uint16_t ids[];             /* mnemonic id of each instruction */
} block_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static block_t **blocks;
static size_t n_blocks, cap_blocks;
static char *mnemonics[MAX_MNEMONICS];
static size_t n_mnemonics;
static char *out_path;
static int window_open = -1;

/* The instructions that tell XNNPACK's kernel families apart, decoded from the instruction word:
 * Debian's disassembler (capstone 4) prints several of them as ".byte". Encodings: Arm A64 ISA. */
static const char *kernel_insn(uint32_t w) {
    if ((w & 0x9FE0FC00u) == 0x0E809400u) return (w >> 29) & 1 ? "udot" : "sdot";     /* vector */
    if ((w & 0x9FC0F400u) == 0x0F80E000u) return (w >> 29) & 1 ? "udot" : "sdot";     /* by element */
    if ((w & 0xBFE0FC00u) == 0x0E809C00u) return "usdot";                               /* vector */
    if ((w & 0xBFC0F400u) == 0x0F00F000u) return (w >> 23) & 1 ? "usdot" : "sudot";   /* by element */
    if ((w & 0xDFE0F400u) == 0x4E80A400u)                                               /* i8mm */
        return (w >> 11) & 1 ? "usmmla" : ((w >> 29) & 1 ? "ummla" : "smmla");
    if ((w & 0xFFE0FC00u) == 0x6E40EC00u) return "bfmmla";
    if ((w & 0xBFE0FC00u) == 0x0E400C00u) return "fmla.f16";                             /* vector, half */
    if ((w & 0xBFC0F400u) == 0x0F001000u) return "fmla.f16";                             /* by element, half */
    if ((w & 0xFFFFF0FFu) == 0xD503407Fu && ((w >> 9) & 7) == 3) return "smstart/smstop"; /* MSR SVCR* */
    if ((w & 0x9E000000u) == 0x80000000u) return "sme";                                  /* SME group */
    if ((w & 0x1E000000u) == 0x04000000u) return "sve";                                  /* SVE group */
    return NULL;
}

static uint16_t intern(const char *text) {
    char m[32];
    size_t i = 0;
    while (text && *text == ' ') text++;
    while (text && text[i] && text[i] != ' ' && text[i] != '\t' && i < sizeof m - 1) {
        m[i] = text[i];
        i++;
    }
    m[i] = 0;
    if (!i) strcpy(m, "?");
    for (size_t k = 0; k < n_mnemonics; k++)
        if (!strcmp(mnemonics[k], m)) return (uint16_t)k;
    if (n_mnemonics == MAX_MNEMONICS) return 0;
    mnemonics[n_mnemonics] = strdup(m);
    return (uint16_t)n_mnemonics++;
}

static void on_exec(unsigned int vcpu, void *udata) {
    block_t *b = udata;
    b->runs[vcpu < MAX_THREADS ? vcpu : MAX_THREADS - 1]++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    block_t *b = calloc(1, sizeof(block_t) + n * sizeof(uint16_t));
    if (!b) return;
    b->n = (uint32_t)n;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *bytes = qemu_plugin_insn_haddr(insn);
        uint32_t w = 0;
        if (bytes) memcpy(&w, bytes, 4);
        const char *known = bytes ? kernel_insn(w) : NULL;
        if (known) {
            b->ids[i] = intern(known);
            continue;
        }
        char *text = qemu_plugin_insn_disas(insn);
        b->ids[i] = intern(text);
        if (text && (!strncmp(text, "yield", 5) || !strncmp(text, "wfe", 3))) b->spin = 1;
        free(text);
    }
    if (n_blocks == cap_blocks) {
        size_t cap = cap_blocks ? 2 * cap_blocks : 65536;
        block_t **grown = realloc(blocks, cap * sizeof *blocks);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            free(b);
            return;
        }
        cap_blocks = cap;
        blocks = grown;
    }
    if (window_open >= 0) memcpy(b->base, b->runs, sizeof b->runs); /* all zero: new block */
    blocks[n_blocks++] = b;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, CB_NO_REGS, b);
}

static void open_window(int window) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_blocks; i++) memcpy(blocks[i]->base, blocks[i]->runs, sizeof blocks[i]->runs);
    window_open = window;
    pthread_mutex_unlock(&lock);
}

static void close_window(int window) {
    static uint64_t insns[MAX_THREADS], spin[MAX_THREADS], per_mnemonic[MAX_MNEMONICS];
    pthread_mutex_lock(&lock);
    memset(insns, 0, sizeof insns);
    memset(spin, 0, sizeof spin);
    memset(per_mnemonic, 0, sizeof per_mnemonic);
    for (size_t i = 0; i < n_blocks; i++) {
        block_t *b = blocks[i];
        uint64_t total = 0;
        for (int t = 0; t < MAX_THREADS; t++) {
            uint64_t d = b->runs[t] - b->base[t];
            if (!d) continue;
            total += d;
            insns[t] += d * b->n;
            if (b->spin) spin[t] += d * b->n;
        }
        if (total)
            for (uint32_t k = 0; k < b->n; k++) per_mnemonic[b->ids[k]] += total;
    }
    FILE *f = out_path ? fopen(out_path, "a") : NULL;
    if (f) {
        fprintf(f, "{\"window\": %d, \"opened\": %d, \"threads\": {", window, window_open);
        int first = 1;
        for (int t = 0; t < MAX_THREADS; t++) {
            if (!insns[t]) continue;
            fprintf(f, "%s\"%d\": {\"insns\": %" PRIu64 ", \"spin\": %" PRIu64 "}", first ? "" : ", ", t, insns[t],
                    spin[t]);
            first = 0;
        }
        fprintf(f, "}, \"mnemonics\": {");
        first = 1;
        for (size_t k = 0; k < n_mnemonics; k++) {
            if (!per_mnemonic[k]) continue;
            fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", mnemonics[k], per_mnemonic[k]);
            first = 0;
        }
        fprintf(f, "}}\n");
        fclose(f);
    }
    window_open = -1;
    pthread_mutex_unlock(&lock);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    (void)id, (void)vcpu, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    uint32_t policy = (uint32_t)a1;
    if (num != MARK_SYSCALL || (policy & MARK_MASK) != MARK_MAGIC) return;
    int code = (policy >> 8) & 0xff, window = policy & 0xff;
    if (code == 1) open_window(window);
    if (code == 2) close_window(window);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t_opaque *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "out=", 4)) out_path = strdup(argv[i] + 4);
    if (!out_path) {
        fprintf(stderr, "edgeopt icount plugin: no out=PATH argument\n");
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
