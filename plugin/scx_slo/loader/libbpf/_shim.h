/* The libbpf print callback shim.
 *
 * libbpf hands its log messages to a callback taking a va_list, which cffi
 * cannot declare. This shim formats each message with vsnprintf and passes
 * the resulting string to a Python callback (an `extern "Python+C"` function
 * declared in libbpf.cdef).
 */
#ifndef SCX_SLO_LIBBPF_SHIM_H
#define SCX_SLO_LIBBPF_SHIM_H

/* Implemented in Python (see scx_slo/loader/libbpf/errors.py). */
void scx_slo_libbpf_log(int level, const char *msg);

/* Route libbpf's messages to scx_slo_libbpf_log. */
void scx_slo_libbpf_install_print(void);
/* Drop libbpf's messages entirely (libbpf_set_print(NULL)). */
void scx_slo_libbpf_silence_print(void);

#endif
