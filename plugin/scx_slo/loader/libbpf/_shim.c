/* See _shim.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <bpf/libbpf.h>

#include "_shim.h"

static int scx_slo_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[1024];
	char *buf = small;
	va_list copy;
	int n;

	va_copy(copy, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n < 0) {
		va_end(copy);
		return n;
	}
	if ((size_t)n >= sizeof(small)) {
		/* Verifier logs can be long: format them whole. */
		buf = malloc((size_t)n + 1);
		if (!buf) {
			va_end(copy);
			scx_slo_libbpf_log((int)level, small);
			return n;
		}
		vsnprintf(buf, (size_t)n + 1, fmt, copy);
	}
	va_end(copy);
	scx_slo_libbpf_log((int)level, buf);
	if (buf != small)
		free(buf);
	return n;
}

void scx_slo_libbpf_install_print(void)
{
	libbpf_set_print(scx_slo_print);
}

void scx_slo_libbpf_silence_print(void)
{
	libbpf_set_print(NULL);
}
