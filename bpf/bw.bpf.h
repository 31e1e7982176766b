/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * bw.bpf.h - cpu.max for scx_slo.bpf.c (included once, where the policy needs it).
 *
 * A cgroup with a quota gets that much run time per period. The limits come
 * from cgroup_init/cgroup_set_bandwidth (Linux >= 6.17) or, before that, from
 * user space, which reads cgroupfs into slo_cg_bw; a resolving task applies a
 * new entry once (cg_apply_fed_bw). Run time is charged to the task's cgroup
 * and to every limited ancestor (the nearest SLO_BW_LEVELS, cached per task).
 * A task of a cgroup out of quota is parked on THROTTLE_DSQ (at enqueue, at
 * dispatch when it reaches a queue's head, at the tick when it runs); a BPF
 * timer puts parked tasks back once their cgroups' next period starts, or
 * after timeout_ms/4 so the watchdog never sees a cpu.max wait. Overrun is at
 * most a tick per CPU and is paid back from the next period. The kernel frees
 * a map's timers when no user space holds the map (the loader pins
 * slo_bw_timer); without a timer nothing is parked and cpu.max is not enforced.
 */
#ifndef __SCX_SLO_BW_BPF_H
#define __SCX_SLO_BW_BPF_H

/* cpu.max values as the kernel passes them (us; ~0 quota = "max"). */
static __always_inline void cg_set_bw(struct cg_info *ci, u64 period_us, u64 quota_us,
				      u64 burst_us)
{
	bool had = ci->quota_ns;

	if (quota_us == BW_QUOTA_MAX || !period_us) {
		ci->quota_ns = 0;
	} else {
		ci->quota_ns = quota_us * 1000;
		ci->period_ns = period_us * 1000;
		ci->burst_ns = burst_us == BW_QUOTA_MAX ? 0 : burst_us * 1000;
		ci->period_start = now_ns();
		ci->runtime = ci->quota_ns;
	}
	if (!had && ci->quota_ns)
		__sync_fetch_and_add(&nr_bw_cgroups, 1);
	else if (had && !ci->quota_ns)
		__sync_fetch_and_add(&nr_bw_cgroups, -1);
}

/*
 * cpu.max that user space read from cgroupfs (slo_cg_bw), on kernels that do
 * not pass it: applied once per new seq, by whichever CPU meets it first.
 * A global function, so the class walk that calls it stays one path.
 */
__noinline int cg_apply_fed_bw(u64 id)
{
	struct slo_cg_bw *bw = bpf_map_lookup_elem(&slo_cg_bw, &id);
	struct cg_info *ci;
	u64 seen;

	if (!bw)
		return 0;
	ci = cg_get(id, 0);
	if (!ci)
		return 0;
	seen = ci->bw_seq;
	if (seen != bw->seq && __sync_bool_compare_and_swap(&ci->bw_seq, seen, bw->seq))
		cg_set_bw(ci, bw->period_us, bw->quota_us, bw->burst_us);
	return 0;
}


/*
 * Start the next period when the current one is over: the quota plus what
 * was left (at most burst), or minus the overrun still owed (at most one
 * quota). After an idle gap of more periods nothing carries over.
 */
static __always_inline void bw_refill(struct cg_info *ci, u64 now)
{
	u64 start = ci->period_start, period = ci->period_ns, n;
	s64 left;

	if (!period || now - start < period)
		return;
	n = (now - start) / period;
	if (!__sync_bool_compare_and_swap(&ci->period_start, start, start + n * period))
		return;
	left = ci->runtime;
	if (n > 1)
		left = 0;
	else if (left > (s64)ci->burst_ns)
		left = ci->burst_ns;
	else if (left < -(s64)ci->quota_ns)
		left = -(s64)ci->quota_ns;
	ci->runtime = left + (s64)ci->quota_ns;
}

/*
 * Visit the limited cgroups on the task's path, starting new periods as they
 * come: charge @used ns of run time to each, and say whether any of them is
 * out of quota.
 */
__noinline int bw_account(struct task_ctx *tctx __arg_nonnull, u64 used, u64 now)
{
	struct cg_info *ci;
	int out = 0;
	u64 id;
	u32 i;

	bpf_for(i, 0, SLO_BW_LEVELS) {
		id = tctx->bw_cgid[i];
		if (!id)
			break;
		ci = cg_get(id, 0);
		if (!ci || !ci->quota_ns)
			continue;
		bw_refill(ci, now);
		if (used)
			__sync_fetch_and_sub(&ci->runtime, (s64)used);
		if (ci->runtime <= 0)
			out = 1;
	}
	return out;
}

static __always_inline bool bw_throttled(struct task_ctx *tctx, u64 now)
{
	return bw_account(tctx, 0, now);
}

static int bw_timer_fn(void *map, int *key, struct bw_timer *t);

/*
 * Make the timer. Only from ops.init and ops.dispatch: the callback moves
 * tasks between DSQs, which the kernel allows only in those contexts, and
 * the callback is checked in the context of the program that sets it.
 */
static __always_inline long bw_timer_make(void)
{
	struct bw_timer *t;
	u32 zero = 0;
	long err;

	t = bpf_map_lookup_elem(&slo_bw_timer, &zero);
	if (!t)
		return -2;	/* -ENOENT */
	err = bpf_timer_init(&t->timer, &slo_bw_timer, CLOCK_MONOTONIC);
	if (err && err != -16)	/* -EBUSY: it exists */
		return err;
	return bpf_timer_set_callback(&t->timer, bw_timer_fn);
}

/*
 * Make sure the timer runs; false if it cannot (then nothing may be parked).
 * The kernel frees a map's timers when the last user space reference to the
 * map goes: then bw_timer_broken is set, and dispatch makes a new timer once
 * somebody holds the map again (the loader pins slo_bw_timer).
 */
static __always_inline bool bw_arm_timer(void)
{
	struct bw_timer *t;
	u32 zero = 0;
	long err = -2;	/* -ENOENT */

	if (bw_timer_broken)
		return false;
	if (!__sync_bool_compare_and_swap(&bw_timer_armed, 0, 1))
		return true;
	t = bpf_map_lookup_elem(&slo_bw_timer, &zero);
	if (t)
		err = bpf_timer_start(&t->timer, BW_TIMER_NS, 0);
	if (err) {
		bw_timer_err = err;
		bw_timer_broken = 1;
		bw_timer_armed = 0;
		return false;
	}
	return true;
}

/* Should this task wait for its cgroups' quota? */
static __always_inline bool bw_must_wait(struct task_ctx *tctx, u64 now)
{
	return tctx->bw_cgid[0] && !bw_timer_broken && bw_throttled(tctx, now);
}

/* Bookkeeping of a task just put on THROTTLE_DSQ. */
static __always_inline void bw_parked(struct task_ctx *tctx)
{
	struct slo_class_stats *st = class_stats(tctx->class_id);

	tctx->in_order = 0;
	if (st)
		st->nr_throttled++;
}

/* Park a task of a throttled cgroup until the timer finds quota for it. */
static __always_inline bool bw_park(struct task_struct *p, struct task_ctx *tctx, u64 enq_flags)
{
	if (!bw_arm_timer())
		return false;
	slo_dsq_insert(p, THROTTLE_DSQ, tctx->slice_ns, enq_flags);
	bw_parked(tctx);
	return true;
}

/*
 * Put parked tasks whose cgroups have quota again (or that waited
 * timeout_ms/4, so the watchdog never sees a cpu.max wait) back on their
 * queue (their CPU's LLC's), latency-critical by deadline, the rest by vtime;
 * wake an idle CPU.
 * A global function, so the timer callback that calls it is cheap to verify
 * from each program that sets the callback. It takes the RCU read lock for
 * the DSQ iterator itself: one of those programs (init) is sleepable, and
 * the 6.12 verifier then does not count the callback as an RCU section.
 */
__noinline int bw_release_parked(u64 now)
{
	u64 limit = (u64)timeout_ms * 1000 * 1000 / 4, vtime;
	struct bpf_iter_scx_dsq it;
	struct task_struct *q;
	struct task_ctx *tctx;
	bool late, moved, left_lat;
	u32 llc;
	s32 cpu;
	int i;

	bpf_rcu_read_lock();
	if (!bpf_iter_scx_dsq_new(&it, THROTTLE_DSQ, 0)) {
		bpf_for(i, 0, BW_SCAN_MAX) {
			q = bpf_iter_scx_dsq_next(&it);
			if (!q)
				break;
			tctx = bpf_task_storage_get(&slo_task_ctx, q, 0, 0);
			/*
			 * Its class or limits changed while it was parked: resolve
			 * them now, or it would go back to the queue of its old class.
			 */
			left_lat = tctx && task_ctx_stale(tctx) && resolve_class_id(tctx, tctx->cgid);
			late = !tctx || now - tctx->enq_at > limit;
			if (!late && bw_throttled(tctx, now))
				continue;
			llc = llc_of(scx_bpf_task_cpu(q));
			if (tctx && tctx->lat && !tctx->over) {
				slo_dsq_move_set_vtime(&it, tctx->deadline);
				moved = slo_dsq_move_vtime(&it, q, lat_dsq(llc), 0);
				if (moved)
					lat_queued_in(tctx);
			} else {
				vtime = q->scx.dsq_vtime;
				barrier_var(vtime);	/* two loads: clang would merge them */
				if (left_lat)
					vtime = vtime_now;
				if (slo_time_before(vtime, vtime_now - slice_ns))
					vtime = vtime_now - slice_ns;
				slo_dsq_move_set_vtime(&it, vtime);
				moved = slo_dsq_move_vtime(&it, q, batch_dsq(llc), 0);
				if (moved && tctx)
					tctx->in_order = 1;
			}
			if (!moved)
				continue;
			__sync_fetch_and_add(&nr_bw_releases, 1);
			if (late && tctx && bw_throttled(tctx, now)) {
				__sync_fetch_and_add(&nr_bw_overrides, 1);
				bw_override_pid = q->pid;
				bw_override_wait_ns = now - tctx->enq_at;
			}
			cpu = scx_bpf_pick_idle_cpu(q->cpus_ptr, 0);
			if (cpu >= 0)
				scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		}
	}
	bpf_iter_scx_dsq_destroy(&it);
	bpf_rcu_read_unlock();
	return 0;
}

/* The timer: release what it can; it re-arms itself while tasks are parked. */
static int bw_timer_fn(void *map, int *key, struct bw_timer *t)
{
	bw_release_parked(now_ns());
	/* a task parked after the scan above sees armed == 0 and re-arms */
	bw_timer_armed = 0;
	if (scx_bpf_dsq_nr_queued(THROTTLE_DSQ) > 0 &&
	    __sync_bool_compare_and_swap(&bw_timer_armed, 0, 1))
		bpf_timer_start(&t->timer, BW_TIMER_NS, 0);
	return 0;
}

#endif /* __SCX_SLO_BW_BPF_H */
