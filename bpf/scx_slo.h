/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * scx_slo.h - the small set of helpers scx_slo.bpf.c needs: struct_ops
 * program macros, error/exit reporting, and kfunc wrappers that pick, at load
 * time with bpf_ksym_exists(), the newest form the kernel has of each kfunc:
 *   insert:        scx_bpf_dsq_insert___v2 (returns bool), scx_bpf_dsq_insert
 *                  (6.13), scx_bpf_dispatch (6.12)
 *   insert_vtime:  __scx_bpf_dsq_insert_vtime (an argument struct),
 *                  scx_bpf_dsq_insert_vtime (6.13), scx_bpf_dispatch_vtime (6.12)
 *   move_to_local: scx_bpf_dsq_move_to_local___v2 (takes enq_flags),
 *                  scx_bpf_dsq_move_to_local (6.13), scx_bpf_consume (6.12)
 *   move*:         scx_bpf_dsq_move* (6.13), scx_bpf_dispatch_from_dsq* (6.12)
 * so that one object loads on kernels 6.12 .. 7.x, and keeps loading once
 * upstream drops the older forms.
 *
 * vmlinux.h (from a 7.3 kernel) declares the kfuncs it has (__weak __ksym).
 * The others are declared here with a "___compat" flavour suffix: libbpf
 * strips everything from the last "___" when it resolves a ksym, so they
 * bind to the kernel's names and read as zero (and are dead-code eliminated
 * by the verifier) where the kernel lacks them.
 */
#ifndef __SCX_SLO_H
#define __SCX_SLO_H

/* vmlinux.h from bpftool may carry empty forward declarations inside structs. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wmissing-declarations"
#include "vmlinux.h"
#pragma clang diagnostic pop
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#ifndef PF_KTHREAD
#define PF_KTHREAD		0x00200000	/* include/linux/sched.h */
#endif

#define BPF_STRUCT_OPS(name, args...) \
	SEC("struct_ops/" #name) BPF_PROG(name, ##args)
#define BPF_STRUCT_OPS_SLEEPABLE(name, args...) \
	SEC("struct_ops.s/" #name) BPF_PROG(name, ##args)

/* 6.12 kfunc names (renamed in 6.13). */
void scx_bpf_dispatch___compat(struct task_struct *p, u64 dsq_id, u64 slice,
			       u64 enq_flags) __ksym __weak;
void scx_bpf_dispatch_vtime___compat(struct task_struct *p, u64 dsq_id,
				     u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
bool scx_bpf_consume___compat(u64 dsq_id) __ksym __weak;
bool scx_bpf_dispatch_from_dsq___compat(struct bpf_iter_scx_dsq *it__iter,
					struct task_struct *p, u64 dsq_id,
					u64 enq_flags) __ksym __weak;
bool scx_bpf_dispatch_vtime_from_dsq___compat(struct bpf_iter_scx_dsq *it__iter,
					      struct task_struct *p, u64 dsq_id,
					      u64 enq_flags) __ksym __weak;
void scx_bpf_dispatch_from_dsq_set_vtime___compat(struct bpf_iter_scx_dsq *it__iter,
						  u64 vtime) __ksym __weak;
void scx_bpf_dispatch_from_dsq_set_slice___compat(struct bpf_iter_scx_dsq *it__iter,
						  u64 slice) __ksym __weak;

/* 7.x forms, named as the kernel names them (flavour suffix stripped by libbpf). */
bool scx_bpf_dsq_insert___v2___compat(struct task_struct *p, u64 dsq_id, u64 slice,
				      u64 enq_flags) __ksym __weak;
bool __scx_bpf_dsq_insert_vtime___compat(struct task_struct *p,
					 struct scx_bpf_dsq_insert_vtime_args *args) __ksym __weak;
bool scx_bpf_dsq_move_to_local___v2___compat(u64 dsq_id, u64 enq_flags) __ksym __weak;

static __always_inline void slo_dsq_insert(struct task_struct *p, u64 dsq_id,
					   u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___compat))
		scx_bpf_dsq_insert___v2___compat(p, dsq_id, slice, enq_flags);
	else if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch___compat(p, dsq_id, slice, enq_flags);
}

static __always_inline void slo_dsq_insert_vtime(struct task_struct *p,
						 u64 dsq_id, u64 slice,
						 u64 vtime, u64 enq_flags)
{
	if (bpf_ksym_exists(__scx_bpf_dsq_insert_vtime___compat)) {
		struct scx_bpf_dsq_insert_vtime_args args = {
			.dsq_id = dsq_id, .slice = slice, .vtime = vtime, .enq_flags = enq_flags,
		};

		__scx_bpf_dsq_insert_vtime___compat(p, &args);
	} else if (bpf_ksym_exists(scx_bpf_dsq_insert_vtime)) {
		scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
	} else {
		scx_bpf_dispatch_vtime___compat(p, dsq_id, slice, vtime, enq_flags);
	}
}

static __always_inline bool slo_dsq_move_to_local(u64 dsq_id)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local___v2___compat))
		return scx_bpf_dsq_move_to_local___v2___compat(dsq_id, 0);
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local))
		return scx_bpf_dsq_move_to_local(dsq_id);
	return scx_bpf_consume___compat(dsq_id);
}

static __always_inline bool slo_dsq_move(struct bpf_iter_scx_dsq *it,
					 struct task_struct *p, u64 dsq_id,
					 u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move))
		return scx_bpf_dsq_move(it, p, dsq_id, enq_flags);
	if (bpf_ksym_exists(scx_bpf_dispatch_from_dsq___compat))
		return scx_bpf_dispatch_from_dsq___compat(it, p, dsq_id, enq_flags);
	return false;
}

/* The vtime the next slo_dsq_move_vtime() from @it inserts with. */
static __always_inline void slo_dsq_move_set_vtime(struct bpf_iter_scx_dsq *it, u64 vtime)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_set_vtime))
		scx_bpf_dsq_move_set_vtime(it, vtime);
	else if (bpf_ksym_exists(scx_bpf_dispatch_from_dsq_set_vtime___compat))
		scx_bpf_dispatch_from_dsq_set_vtime___compat(it, vtime);
}

/* The slice the next slo_dsq_move*() from @it gives the task. */
static __always_inline void slo_dsq_move_set_slice(struct bpf_iter_scx_dsq *it, u64 slice)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_set_slice))
		scx_bpf_dsq_move_set_slice(it, slice);
	else if (bpf_ksym_exists(scx_bpf_dispatch_from_dsq_set_slice___compat))
		scx_bpf_dispatch_from_dsq_set_slice___compat(it, slice);
}

static __always_inline bool slo_dsq_move_vtime(struct bpf_iter_scx_dsq *it,
					       struct task_struct *p, u64 dsq_id,
					       u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_vtime))
		return scx_bpf_dsq_move_vtime(it, p, dsq_id, enq_flags);
	if (bpf_ksym_exists(scx_bpf_dispatch_vtime_from_dsq___compat))
		return scx_bpf_dispatch_vtime_from_dsq___compat(it, p, dsq_id, enq_flags);
	return false;
}

/*
 * scx_bpf_error(): format into a u64 array the way
 * bpf_snprintf() expects and hand it to scx_bpf_error_bstr (present since
 * 6.12). Use only with 0..3 arguments.
 */
#define scx_bpf_error(fmt, args...)						\
({										\
	static char ___fmt[] = fmt;						\
	unsigned long long ___param[___bpf_narg(args)];				\
										\
	_Pragma("GCC diagnostic push")						\
	_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")			\
	___bpf_fill(___param, args);						\
	_Pragma("GCC diagnostic pop")						\
	scx_bpf_error_bstr(___fmt, ___param, sizeof(___param));			\
})

#define SLO_MIN(a, b)	((a) < (b) ? (a) : (b))
#define SLO_MAX(a, b)	((a) > (b) ? (a) : (b))

/* Index (0..63) of the highest set bit; 0 for v == 0. Branch-light fls. */
static __always_inline u32 slo_log2_u64(u64 v)
{
	u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8)  { v >>= 8;  r += 8; }
	if (v >> 4)  { v >>= 4;  r += 4; }
	if (v >> 2)  { v >>= 2;  r += 2; }
	if (v >> 1)  { r += 1; }
	return r;
}

static __always_inline bool slo_time_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

#endif /* __SCX_SLO_H */
