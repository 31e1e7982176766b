/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * scx_slo - an SLO-aware sched_ext scheduler for Kubernetes nodes.
 *
 * Policy:
 *  - Full switch: every SCHED_NORMAL/BATCH/IDLE task is scheduled here.
 *  - Class: a task's SLO class comes from its cgroup (the one init_task and
 *    cgroup_move name). It and its ancestors (deepest first, at most
 *    SLO_MAX_WALK levels) are looked up in slo_cgroups (cgroup id -> class),
 *    so a container scope inherits its pod slice's class. The result is cached
 *    in task storage and recomputed, from the cgroup id, when user space bumps
 *    slo_gen, when cpu.weight changes, or when the task moves cgroup. Class 0
 *    is the default (batch) class.
 *  - Queues by topology: each last-level cache (split where one spans NUMA
 *    nodes) has a latency-critical and a batch DSQ; a task queues on its
 *    CPU's LLC. A CPU serves its own LLC's queues, then steals from the
 *    nearest LLC with work (its node's first), latency-critical before
 *    batch; every 100 ms it also takes from a nearby LLC whose batch queue is
 *    a round longer than its own, so busy LLCs even out.
 *  - Latency-critical classes: on wakeup take an idle CPU (a fully idle core
 *    first), else preempt the nearest CPU that runs lower-class work: the
 *    task's own, its SMT sibling, a sample of its LLC, of its node, of the
 *    machine (or, lat_preempt_ns set, its own CPU if the latency-critical task
 *    there has run lat_preempt_ns and is not due before it). Either way the
 *    task goes straight onto that CPU's local DSQ (SCX_ENQ_PREEMPT), so the
 *    CPU kicked runs the task it was kicked for. With neither, it queues by
 *    deadline (wakeup + class budget). A waker claims its victim atomically;
 *    the claim ends when the victim reschedules or after KICK_CLAIM_NS, so one
 *    kick per CPU is in flight and a lost one does not take the CPU out of
 *    reach. The minimum run keeps latency-critical tasks from preempting each
 *    other in a loop. Short slices, and while latency-critical tasks are
 *    queued a 1 ms BPF timer preempts CPUs whose task ran past its slice: at
 *    HZ=100 a slice would otherwise last until the next 10 ms tick.
 *  - Entitlement: a latency-critical cgroup is served first only up to its
 *    share of the machine (its hierarchical share, below, times the CPUs),
 *    accrued as it runs and banked for at most ENTITLE_WINDOW_NS. Beyond that
 *    its tasks are served as batch (by weight, preemptible) until the share
 *    catches up, so a latency-critical pod cannot take the CPU batch pods'
 *    requests guarantee them.
 *  - Everything else: weighted virtual time on the batch queues. A task's weight is
 *    its cgroup's hierarchical share, as the kernel's fair class computes it
 *    (at each level cpu.weight over the sum of the active siblings' weights,
 *    multiplied up to the root), split among the cgroup's runnable tasks by
 *    p->scx.weight, times its class weight. So Kubernetes' same weight on a
 *    pod slice and its container scope counts once, and QoS slices share by
 *    the requests they carry. A cgroup stays active LINGER_NS after its last
 *    task sleeps, so one that wakes every few ms does not change every
 *    share twice per wakeup. A batch task preempted with slice left resumes
 *    after the task that preempted it, as the kernel resumes a task a higher
 *    class preempted, unless latency-critical work is queued.
 *  - cpu.max (bw.bpf.h): a cgroup with a quota gets that much run time per
 *    period, charged to it and to its limited ancestors; a task of a cgroup
 *    out of quota is parked until the next period. This binds every class: a
 *    limit is a limit.
 *  - Bounded starvation: each CPU keeps a debt of latency-critical run time
 *    that batch time pays back at (100 - batch_floor_pct)/batch_floor_pct;
 *    while batch work is queued and the debt reaches that many batch slices,
 *    the CPU runs batch (floor boost), which lat wakeups do not preempt.
 *    Per-CPU kthreads go to their CPU's local DSQ, ahead of both DSQs. Every
 *    100 ms each CPU scans the tail of its LLC's batch queue and runs every task (up to
 *    32) that has waited more than timeout_ms/4, each for a short slice, so
 *    the bound holds however many tasks starve.
 *  - Observability: per-class, per-CPU wakeup-to-run log2 histograms and
 *    counters in slo_stats; every SLO miss of a latency-critical class as a
 *    record in the slo_misses ring buffer, rate-limited per cgroup; ops.exit
 *    copies the exit info into slo_exit.
 *
 * Map/tunable names are a contract with the Python loader: see bpf/README.md.
 */
#include "scx_slo.h"

char _license[] SEC("license") = "GPL";

#define SLO_MAX_CLASSES		8
#define SLO_MAX_WALK		16
#define SLO_MAX_CPUS		1024
#define SLO_HIST_BUCKETS	32

#define SLO_MAX_LLCS		256
#define SLO_MAX_CGROUPS		16384
#define THROTTLE_DSQ		4	/* tasks of cgroups out of cpu.max quota */
#define LAT_DSQ_BASE		0x100	/* + LLC: latency-critical tasks queued near that LLC */
#define BATCH_DSQ_BASE		0x200	/* + LLC: batch tasks queued near that LLC */
#define VICTIM_PROBES		8	/* CPUs sampled per tier when looking for a victim */

#define SLO_BW_LEVELS		4	/* limited cgroups charged per task */
#define BW_TIMER_NS		(2ULL * 1000 * 1000)
#define BW_SCAN_MAX		512
#define BW_PICK_MAX		32
#define BW_QUOTA_MAX		(~0ULL)	/* cpu.max "max" (RUNTIME_INF) */
#ifndef CLOCK_MONOTONIC
#define CLOCK_MONOTONIC		1
#endif

#define SLO_W_ONE		65536ULL	/* hierarchical share 1.0 */
#define STARVE_SCAN_NS		(100ULL * 1000 * 1000)
#define KICK_CLAIM_NS		(4ULL * 1000 * 1000)	/* a victim claim lapses (the kick was lost) */
#define STARVE_SCAN_MAX		256
#define STARVE_RESCUE_MAX	32	/* tasks one scan may rescue (one dispatch's batch) */
#define ENTITLE_WINDOW_NS	(100ULL * 1000 * 1000)	/* unused share banked, at most */
#define LINGER_NS		(10ULL * 1000 * 1000)	/* an idle cgroup stays active this long */
#define LINGER_RELEASE_MAX	16	/* lingering cgroups one dispatch looks at */

/* ---- tunables, set by user space before load ---- */
const volatile u64 slice_ns = 5ULL * 1000 * 1000;	/* batch slice */
const volatile u64 lat_slice_ns = 1ULL * 1000 * 1000;	/* latency-critical slice */
const volatile u64 lat_budget_ns = 2ULL * 1000 * 1000;	/* budget if a class sets 0 */
const volatile u32 batch_floor_pct = 5;
const volatile u32 timeout_ms = 5000;
const volatile u32 miss_frac_pct = 100;
const volatile u64 slice_timer_ns = 1ULL * 1000 * 1000;	/* slice ends enforced this finely; 0 = at ticks */
const volatile u64 lat_preempt_ns = 0;	/* a latency-critical run this long may be preempted by another; 0 = never */

/*
 * The CPU topology, from sysfs at load time (scx_slo.loader.topology). CPUs
 * are grouped by last-level cache (split where one spans NUMA nodes), LLCs by
 * node: LLC l holds topo_order[llc_first[l] .. llc_first[l + 1]), and its
 * node the LLCs llc_node_first[l] .. llc_node_end[l] - 1.
 */
const volatile u32 nr_llcs = 0;				/* 0: not set (init refuses) */
const volatile u32 cpu_llc[SLO_MAX_CPUS];
const volatile s32 cpu_sibling[SLO_MAX_CPUS];		/* an SMT sibling, or the CPU itself */
const volatile u16 topo_order[SLO_MAX_CPUS];
const volatile u32 llc_first[2 * SLO_MAX_LLCS];		/* nr_llcs + 1 used */
const volatile u32 llc_node_first[SLO_MAX_LLCS];
const volatile u32 llc_node_end[SLO_MAX_LLCS];

/* ---- maps shared with user space ---- */
struct slo_class_entry {
	u32 class_id;
	u32 flags;		/* reserved, 0 */
};

struct slo_class_cfg {
	u64 budget_ns;		/* wakeup-to-run budget; deadline = wakeup + budget */
	u64 slice_ns;		/* 0: lat_slice_ns or slice_ns */
	u32 latency_critical;
	u32 weight;		/* class weight multiplier, 100 = 1.0; 0 = 100 */
	u64 miss_threshold_ns;	/* 0: budget * miss_frac_pct / 100 */
};

struct slo_class_stats {
	u64 lat_hist[SLO_HIST_BUCKETS];	/* bucket i: wakeup-to-run in [2^i, 2^(i+1)) ns */
	u64 nr_wakeups;
	u64 nr_misses;
	u64 nr_preempts;	/* SCX_KICK_PREEMPT issued on behalf of this class */
	u64 nr_direct;		/* dispatched straight to an idle CPU */
	u64 nr_floor_boosts;	/* batch slices forced by the floor */
	u64 nr_fallbacks;	/* latency-critical wakeups with no idle/preemptible CPU */
	u64 nr_kthread_local;	/* per-CPU kthreads sent to their local DSQ */
	u64 nr_starve_rescues;	/* tasks pulled out of a batch queue by the starvation scan */
	u64 nr_class_errors;	/* cgroup mapped to an out-of-range class (used 0) */
	u64 nr_enqueues;
	u64 run_ns;		/* CPU time consumed by the class */
	u64 nr_throttled;	/* tasks parked because a cgroup ran out of cpu.max quota */
	u64 nr_over_share;	/* latency-critical enqueues served as batch: over the cgroup's share */
	u64 nr_miss_drops;	/* latency-critical misses not in slo_misses (rate, ring full) */
	u64 nr_preempt_llc;	/* of nr_preempts: the victim shares the waking CPU's LLC */
	u64 nr_preempt_node;	/* ... another LLC of its NUMA node */
	u64 nr_preempt_far;	/* ... another node */
	u64 nr_steals;		/* tasks a CPU with empty queues took from another LLC's */
	u64 nr_balances;	/* tasks taken from an LLC whose queue was a round longer */
};

/* One SLO miss, as the agent reads it from slo_misses. */
struct slo_miss {
	u64 cgid;		/* the task's cgroup */
	u64 delay_ns;		/* wakeup to run */
	u64 at_ns;		/* when it ran (CLOCK_MONOTONIC) */
	u32 pid;
	u32 cpu;
	u32 class_id;
	u32 pad;
};

/* cpu.max as user space read it from cgroupfs, for kernels that do not pass it (< 6.17). */
struct slo_cg_bw {
	u64 period_us;
	u64 quota_us;		/* ~0: "max" */
	u64 burst_us;
	u64 seq;		/* changed by user space with every new value */
};

struct slo_exit_info {
	s64 kind;
	s64 exit_code;
	char reason[128];
	char msg[1024];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct slo_class_entry);
} slo_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLO_MAX_CLASSES);
	__type(key, u32);
	__type(value, struct slo_class_cfg);
} slo_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} slo_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLO_MAX_CLASSES);
	__type(key, u32);
	__type(value, struct slo_class_stats);
} slo_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct slo_exit_info);
} slo_exit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct slo_cg_bw);
} slo_cg_bw SEC(".maps");

/* ---- internal state ---- */
struct cg_info {
	u64 id;			/* the cgroup's id; 0: a free slot */
	u32 parent;		/* the parent's slot + 1; 0: the root (or a parent not known) */
	u32 weight;		/* cpu.weight, 1..10000 */
	s32 nr_runnable;	/* runnable tasks charged to this cgroup */
	s64 task_w;		/* sum of the p->scx.weight of those tasks */
	s32 nr_active;		/* those tasks + active child cgroups + 1 while active; 0: idle */
	u32 active_w;		/* the weight this cgroup adds to its parent's child_w */
	u32 lingering;		/* on slo_linger, to be made idle once LINGER_NS have passed */
	u64 idle_at;		/* when its last task or active child left */
	s64 child_w;		/* sum of the active children's weights */
	u64 hw;			/* share of its top-level ancestor, SLO_W_ONE = all */
	u64 hw_gen;		/* hw_gen when hw was computed */
	u32 top_w;		/* cpu.weight of that ancestor (a child of the root) */
	u64 quota_ns;		/* cpu.max quota per period; 0 = max (no limit) */
	u64 period_ns;
	u64 burst_ns;		/* unused quota carried into the next period, at most */
	u64 period_start;
	s64 runtime;		/* quota left in this period; <= 0: throttled */
	u64 bw_seq;		/* slo_cg_bw seq applied */
	s64 lat_tokens;		/* latency-critical run time it may still take first, ns */
	u64 lat_refill_at;	/* when lat_tokens last accrued; 0 = never (a full bank) */
	u64 miss_window;	/* start of the current miss-record window */
	u32 miss_records;	/* records sent in it */
};

struct bw_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bw_timer);
} slo_bw_timer SEC(".maps");

/* The slice timer: ends slices between ticks while latency-critical work waits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bw_timer);
} slo_slice_timer SEC(".maps");

/*
 * Per-cgroup state lives in an array, one slot per cgroup (cgroup_init takes
 * one from slo_cg_free, cgroup_exit gives it back, to the end of the line):
 * the hot paths reach it by the slot cached in the task context, an array
 * access the verifier inlines, instead of hashing the cgroup id. Each slot
 * says whose it is (id), so a stale slot is never charged. slo_cg_slot maps
 * a cgroup id to its slot + 1, for the paths that start from an id.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLO_MAX_CGROUPS);
	__type(key, u32);
	__type(value, struct cg_info);
} slo_cg_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLO_MAX_CGROUPS);
	__type(key, u64);
	__type(value, u32);
} slo_cg_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, SLO_MAX_CGROUPS);
	__type(value, u32);
} slo_cg_free SEC(".maps");

/* Cgroups with nothing runnable that still count as active, oldest first (cg_linger). */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 16384);
	__type(value, u64);
} slo_linger SEC(".maps");

/*
 * Every SLO miss, for per-pod alerts: a cgroup sends at most MISS_RECORDS per
 * MISS_WINDOW_NS, so a storm in one pod cannot flood the agent or crowd out
 * the others; the rest are counted (nr_miss_drops), as are records the full
 * ring refuses.
 */
#define MISS_WINDOW_NS	(100ULL * 1000 * 1000)
#define MISS_RECORDS	16
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} slo_misses SEC(".maps");
/* Puts struct slo_miss in the object's BTF, where the agent reads the records' layout. */
const volatile struct slo_miss *slo_miss_layout __attribute__((unused));

struct task_ctx {
	u64 gen;		/* slo_gen when the class was resolved; ~0 = stale */
	u64 wgen;		/* weight_gen when resolved */
	u64 cgid;		/* task's cgroup (the one owning its cpu controller) */
	u64 counted_cgid;	/* cgroup whose nr_runnable counts this task, 0 = none */
	u32 cgx;		/* cgid's slot + 1 in slo_cg_info; 0: none */
	u32 counted_x;		/* counted_cgid's */
	u64 counted_w;		/* the p->scx.weight it was counted with */
	u64 budget_ns;
	u64 slice_ns;
	u64 miss_ns;
	u64 wake_at;		/* set on wakeup, cleared when it runs */
	u64 enq_at;		/* last time it was queued (starvation scan) */
	u64 deadline;
	u64 bw_cgid[SLO_BW_LEVELS];	/* limited cgroups on the path, deepest first */
	u32 nr_bw;		/* entries of bw_cgid in use (kept in memory, not a register:
				 * the verifier would explore the class walk once per value) */
	u32 class_id;
	u32 class_w;
	u32 lat;		/* latency-critical class */
	u32 in_order;		/* on a batch queue, will run in vtime order */
	u32 over;		/* latency-critical, but its cgroup is over its share: served as batch */
	u32 lat_queued;		/* counted in nr_lat_queued (on a latency-critical DSQ) */
	u32 resumed;		/* back on its CPU after a preemption, ahead of the queues */
	u64 resume_ns;		/* preempted as batch with this much slice left; 0 = not */
	s32 woke_from;		/* the CPU it last ran on, as select_cpu saw it; -1: none */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} slo_task_ctx SEC(".maps");

enum cur_kind { CUR_IDLE = 0, CUR_BATCH = 1, CUR_LAT = 2, CUR_KTHREAD = 3 };

/*
 * Written only by the owning CPU (but kick_at, a waker's claim), read racily
 * by others to pick a victim; one cache line each, so a CPU's writes at every
 * context switch do not invalidate its neighbours' entries.
 */
struct cpu_ctx {
	u64 exec_mark;		/* the running task's sum_exec_runtime when last accounted */
	u64 floor_debt;		/* latency-critical ns not yet matched by batch time at the floor rate */
	u64 last_scan;
	u64 kick_at;		/* a waker's claim on this CPU as its preemption victim; 0 = none */
	u64 slice_end;		/* when the running task's slice is over */
	u64 run_since;		/* when the running task started this run */
	u64 cur_budget;		/* the running latency-critical task's budget */
	u32 cur;		/* enum cur_kind */
	u32 floor_boost;	/* the running batch task is the floor's: do not preempt */
	u32 boost_next;		/* dispatch granted the floor to the next batch task */
} __attribute__((aligned(64)));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLO_MAX_CPUS);
	__type(key, u32);
	__type(value, struct cpu_ctx);
} slo_cpu_ctx SEC(".maps");

/*
 * Virtual time of the batch work now being served: the vtime of tasks taken
 * from the head of a batch queue (or kept because they still lead it). Tasks that
 * run out of order (direct dispatch, per-CPU kthreads, starvation rescues) do
 * not move it, so a rescued laggard cannot drag every waker behind it.
 */
/*
 * The globals written on the hot path each have a cache line: vtime_now (a
 * task runs in vtime order), hw_gen (a cgroup's activity changes),
 * nr_lat_queued (latency-critical tasks queued and taken). The rest are read
 * far more often than written.
 */
u64 vtime_now __attribute__((aligned(64)));
u64 hw_gen __attribute__((aligned(64)));	/* bumped when a cgroup becomes active or idle */
s64 nr_lingering;			/* entries on slo_linger */
u64 linger_check_at;			/* when dispatch next looks at slo_linger */
s64 nr_lat_queued __attribute__((aligned(64)));	/* tasks on the latency-critical DSQs */
u64 weight_gen __attribute__((aligned(64)));
u64 root_cgid;			/* the root cgroup, as cgroup_init names it */
u32 root_cgx;			/* its slot + 1 */
u64 nr_cg_full;			/* cgroups that found no free slot (they count in no share) */
u32 smt_on;			/* some CPU has an SMT sibling (init, from cpu_sibling) */
s64 nr_bw_cgroups;		/* cgroups with a cpu.max quota */
u64 bw_timer_armed;
u64 nr_bw_releases;		/* parked tasks put back by the timer */
u64 nr_bw_overrides;		/* ... put back still throttled, having waited timeout_ms/4 */
s32 bw_override_pid;		/* the last override, for diagnosis */
u64 bw_override_wait_ns;
s64 bw_timer_err;		/* the failed bpf_timer_start(), for diagnosis */
u32 bw_timer_broken;		/* no timer (yet): cpu.max is not enforced */
u64 bw_last_make;
u64 slice_timer_armed;
u32 slice_timer_broken;		/* no slice timer: slices end at ticks only */
u64 nr_slice_kicks;		/* CPUs preempted by the slice timer */
u64 nr_lat_preempts;		/* latency-critical runs preempted by a latency-critical wakeup */
/* last starvation rescue, for diagnosis: pid, wait, vtime ahead of vtime_now */
s32 rescue_pid;
u64 rescue_wait_ns;
s64 rescue_vtime_lead;

static __always_inline u64 now_ns(void)
{
	return bpf_ktime_get_ns();
}

static __always_inline struct slo_class_stats *class_stats(u32 cls)
{
	return bpf_map_lookup_elem(&slo_stats, &cls);
}

static __always_inline struct cpu_ctx *cpu_ctx_of(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&slo_cpu_ctx, &key);
}

/* The cgroup in slot @x - 1 of slo_cg_info; NULL for 0. */
static __always_inline struct cg_info *cg_at(u32 x)
{
	u32 k = x - 1;

	if (!x)
		return NULL;
	return bpf_map_lookup_elem(&slo_cg_info, &k);
}

/* Slot + 1 of cgroup @id, 0 if it has none. */
static __always_inline u32 cg_slot_of(u64 id)
{
	u32 *x = bpf_map_lookup_elem(&slo_cg_slot, &id);

	return x ? *x : 0;
}

/* Cgroup @id's state, by its slot @x (0: look it up); NULL if it has none. */
static __always_inline struct cg_info *cg_get(u64 id, u32 x)
{
	struct cg_info *ci;

	if (!id)
		return NULL;
	ci = cg_at(x ? x : cg_slot_of(id));
	return ci && ci->id == id ? ci : NULL;
}

/*
 * Readers of the topology arrays. The index is masked as well as checked:
 * clang may drop or reorder a check it has proved, the verifier needs one it
 * can see (the array sizes are powers of two).
 */
/* The LLC (topology index) of @cpu. */
static __always_inline u32 llc_of(s32 cpu)
{
	u32 c = cpu;

	if (c >= SLO_MAX_CPUS)
		return 0;
	barrier_var(c);
	return cpu_llc[c & (SLO_MAX_CPUS - 1)];
}

static __always_inline s32 sibling_of(s32 cpu)
{
	u32 c = cpu;

	if (c >= SLO_MAX_CPUS)
		return cpu;
	barrier_var(c);
	return cpu_sibling[c & (SLO_MAX_CPUS - 1)];
}

/* Where LLC @l's CPUs start in topo_order (@l = nr_llcs: where they end). */
static __always_inline u32 llc_start(u32 l)
{
	if (l > SLO_MAX_LLCS)
		return 0;
	barrier_var(l);
	return llc_first[l & (2 * SLO_MAX_LLCS - 1)];
}

/* The first LLC of @l's node, and one past its last. */
static __always_inline u32 node_first(u32 l)
{
	if (l >= SLO_MAX_LLCS)
		return 0;
	barrier_var(l);
	return llc_node_first[l & (SLO_MAX_LLCS - 1)];
}

static __always_inline u32 node_end(u32 l)
{
	if (l >= SLO_MAX_LLCS)
		return 0;
	barrier_var(l);
	return llc_node_end[l & (SLO_MAX_LLCS - 1)];
}

static __always_inline u64 lat_dsq(u32 llc)
{
	return LAT_DSQ_BASE + llc;
}

static __always_inline u64 batch_dsq(u32 llc)
{
	return BATCH_DSQ_BASE + llc;
}

/*
 * The @k-th nearest LLC to @llc (k = 0: itself): the LLCs of its node in a
 * ring from it, then the other nodes' from the next node on.
 */
static __always_inline u32 llc_near(u32 llc, u32 k)
{
	u32 first, end, n;

	if (llc >= SLO_MAX_LLCS || !nr_llcs)
		return 0;
	first = node_first(llc);
	end = node_end(llc);
	if (end <= first || llc < first)
		return llc;
	n = end - first;
	if (k < n)
		return first + (llc - first + k) % n;
	return (end + k - n) % nr_llcs;
}

static __always_inline bool same_node(u32 a, u32 b)
{
	return node_first(a) == node_first(b);
}

static __always_inline u64 slo_gen_now(void)
{
	u32 zero = 0;
	u64 *g = bpf_map_lookup_elem(&slo_gen, &zero);

	return g ? *g : 0;
}

static __always_inline bool is_pcpu_kthread(const struct task_struct *p)
{
	return (p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1;
}

/*
 * The test build (-DSCX_SLO_TEST_HOOKS, scx_slo.dev's hooks object) can withhold
 * one task, to prove that the watchdog ejects a scheduler that stalls work: the
 * canary is parked on STALL_DSQ, which nothing consumes. The shipped object has
 * no such task, no such queue and no such tunable.
 */
#ifdef SCX_SLO_TEST_HOOKS
#define STALL_DSQ		3
const volatile s32 stall_canary_pid = 0;		/* 0 = off */

static __always_inline bool is_canary(const struct task_struct *p)
{
	return stall_canary_pid && p->pid == stall_canary_pid;
}
#else
#define is_canary(p)		false
#endif

/* cpu.max, applied while a class is resolved (bw.bpf.h) */
__noinline int cg_apply_fed_bw(u64 id);

/*
 * Resolve a task's class and cpu.max limits from its
 * cgroup, by id. Walks from the cgroup towards the root; the deepest cgroup
 * present in slo_cgroups decides the class. A global function: the verifier
 * checks it once, not at every call site. Returns 1 if the task left a
 * latency-critical class. Safe in any context (it takes no task).
 */
__noinline int resolve_class_id(struct task_ctx *tctx __arg_nonnull, u64 cgid)
{
	struct slo_class_cfg *cfg;
	struct cgroup *cgrp, *anc;
	u32 cls = 0, i, n;
	bool found = false, left_lat;
	int level;

	tctx->gen = slo_gen_now();
	tctx->wgen = weight_gen;
	bpf_for(i, 0, SLO_BW_LEVELS)
		tctx->bw_cgid[i] = 0;
	tctx->nr_bw = 0;

	cgrp = cgid ? bpf_cgroup_from_id(cgid) : NULL;
	if (!cgrp)
		goto set;
	level = cgrp->level;

	bpf_for(i, 0, SLO_MAX_WALK) {
		struct slo_class_entry *ent;
		struct cg_info *ci;
		u64 id;

		if ((int)i > level)
			break;
		anc = bpf_cgroup_ancestor(cgrp, level - i);
		if (!anc)
			break;
		id = anc->kn->id;
		bpf_cgroup_release(anc);

		if (!found) {
			ent = bpf_map_lookup_elem(&slo_cgroups, &id);
			if (ent) {
				cls = ent->class_id;
				found = true;
			}
		}
		/* the root cgroup has no cpu.max */
		if (level - (int)i > 0) {
			cg_apply_fed_bw(id);
			ci = cg_get(id, 0);
			if (ci && ci->quota_ns) {
				n = tctx->nr_bw;
				if (n < SLO_BW_LEVELS) {
					tctx->bw_cgid[n] = id;
					tctx->nr_bw = n + 1;
				}
			}
		}
	}
	bpf_cgroup_release(cgrp);
set:
	if (cls >= SLO_MAX_CLASSES) {
		struct slo_class_stats *st = class_stats(0);

		if (st)
			st->nr_class_errors++;
		cls = 0;
	}
	tctx->class_id = cls;

	cfg = bpf_map_lookup_elem(&slo_classes, &cls);
	left_lat = tctx->lat && !(cfg && cfg->latency_critical);
	tctx->lat = cfg && cfg->latency_critical;
	if (!tctx->lat)
		tctx->over = 0;
	tctx->budget_ns = (cfg && cfg->budget_ns) ? cfg->budget_ns : lat_budget_ns;
	if (cfg && cfg->slice_ns)
		tctx->slice_ns = cfg->slice_ns;
	else
		tctx->slice_ns = tctx->lat ? lat_slice_ns : slice_ns;
	tctx->class_w = (cfg && cfg->weight) ? cfg->weight : 100;
	if (cfg && cfg->miss_threshold_ns)
		tctx->miss_ns = cfg->miss_threshold_ns;
	else
		tctx->miss_ns = tctx->budget_ns * miss_frac_pct / 100;
	return left_lat;
}

static __always_inline bool task_ctx_stale(struct task_ctx *tctx)
{
	return tctx->gen != slo_gen_now() || tctx->wgen != weight_gen;
}

/*
 * Task context with an up-to-date class; NULL only if storage is missing.
 * The cgroup id comes from init_task and cgroup_move, so this needs no
 * kfunc on @p and may be called on any task the scheduler holds (dispatch's
 * prev, tick's current, a task met on a DSQ), not only the operation's own.
 */
static __always_inline struct task_ctx *task_ctx_fresh(struct task_struct *p)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);
	if (!tctx)
		return NULL;
	/*
	 * Leaving a latency-critical class: dsq_vtime holds the last deadline
	 * (a clock value), not a virtual time; start from the present one.
	 * (Callers hold tasks that are not on a DSQ.)
	 */
	if (task_ctx_stale(tctx) && resolve_class_id(tctx, tctx->cgid))
		p->scx.dsq_vtime = vtime_now;
	return tctx;
}

/*
 * Hierarchical shares (as the kernel's fair class and scx_flatcg compute them):
 * a cgroup is active while it has runnable tasks (of any class) or an active
 * child; its share of its parent is its cpu.weight over the sum of its active
 * siblings' weights (the parent's child_w), and its share of the machine the
 * product of those fractions up to the root. A cgroup's activity changes only
 * when its first task arrives or its last leaves, so the walk up runs then,
 * not per wakeup; shares are recomputed lazily (hw_gen) when activity moved.
 *
 * Going idle waits LINGER_NS (as the fair class's shares follow a decaying
 * load average, not each sleep): a cgroup whose tasks sleep and wake every
 * few ms stays active, so its wakeups walk nothing and invalidate no share.
 * While active, a cgroup holds one count of its own in nr_active; when only
 * that is left it goes on slo_linger, and dispatch (cg_release_due) drops the
 * hold once it has been idle LINGER_NS, if nothing came back meanwhile.
 */
static __always_inline void cg_linger(struct cg_info *ci, u64 now)
{
	u64 id = ci->id;

	ci->idle_at = now;
	if (ci->lingering || !__sync_bool_compare_and_swap(&ci->lingering, 0, 1))
		return;		/* already queued: it is looked at again then */
	if (bpf_map_push_elem(&slo_linger, &id, 0)) {
		ci->lingering = 0;	/* queue full: it stays active until its next sleep */
		return;
	}
	__sync_fetch_and_add(&nr_lingering, 1);
}

/*
 * @ci just became active: take its hold, add its weight to its
 * parent's child_w, and count it as an active child there, and so on up while
 * ancestors were idle. A global function: verified once.
 */
__noinline int cg_activate(struct cg_info *ci __arg_nonnull)
{
	u32 i;

	bpf_for(i, 0, SLO_MAX_WALK) {
		struct cg_info *pi;
		u32 w;

		__sync_fetch_and_add(&ci->nr_active, 1);	/* the hold */
		__sync_fetch_and_add(&hw_gen, 1);
		pi = cg_at(ci->parent);
		if (!pi)
			return 0;
		w = ci->weight;
		ci->active_w = w;
		__sync_fetch_and_add(&pi->child_w, (s64)w);
		if (__sync_fetch_and_add(&pi->nr_active, 1) != 0)
			return 0;	/* the parent was active already */
		ci = pi;
	}
	return 0;
}

/* A task or an active child arrives in (@delta +1) or leaves (-1) @ci. */
static __always_inline void cg_activity(struct cg_info *ci, s32 delta, u64 now)
{
	s32 old = __sync_fetch_and_add(&ci->nr_active, delta);

	if (delta < 0) {
		if (old == 2)	/* only its own hold is left */
			cg_linger(ci, now);
	} else if (old == 0) {
		cg_activate(ci);
	}
}

/*
 * Make @ci idle if only its hold is left; its parent loses an active child
 * (and may linger in turn). False if something became runnable in it.
 */
static __always_inline bool cg_drop_hold(struct cg_info *ci)
{
	struct cg_info *pi;

	if (!__sync_bool_compare_and_swap(&ci->nr_active, 1, 0))
		return false;
	__sync_fetch_and_add(&hw_gen, 1);
	pi = cg_at(ci->parent);
	if (!pi)
		return true;
	__sync_fetch_and_add(&pi->child_w, -(s64)ci->active_w);
	cg_activity(pi, -1, now_ns());
	return true;
}

/* Drop the holds of cgroups idle for LINGER_NS, oldest first. A global function: verified once. */
__noinline int cg_release_due(u64 now)
{
	struct cg_info *ci;
	u64 id;
	u32 i;

	bpf_for(i, 0, LINGER_RELEASE_MAX) {
		if (bpf_map_pop_elem(&slo_linger, &id))
			break;
		__sync_fetch_and_add(&nr_lingering, -1);
		ci = cg_get(id, 0);
		if (!ci)
			continue;	/* gone (cgroup_exit released it) */
		if (ci->nr_active == 1 && now - ci->idle_at < LINGER_NS) {
			/* not yet: back in line, and the ones behind it are younger */
			if (bpf_map_push_elem(&slo_linger, &id, 0))
				ci->lingering = 0;
			else
				__sync_fetch_and_add(&nr_lingering, 1);
			break;
		}
		ci->lingering = 0;
		if (!cg_drop_hold(ci) && ci->nr_active == 1)
			cg_linger(ci, now);	/* went idle again as we looked */
	}
	return 0;
}

/* Count @p (weight @w) in or out (@delta +1/-1) of cgroup @cgid's (slot @x) runnable tasks. */
static __always_inline void cg_task_count(u64 cgid, u32 x, s32 delta, u64 w, u64 now)
{
	struct cg_info *ci = cg_get(cgid, x);

	if (!ci)
		return;
	__sync_fetch_and_add(&ci->nr_runnable, delta);
	__sync_fetch_and_add(&ci->task_w, delta > 0 ? (s64)w : -(s64)w);
	cg_activity(ci, delta, now);
}

static __always_inline void task_count_in(struct task_ctx *tctx, struct task_struct *p, u64 now)
{
	tctx->counted_cgid = tctx->cgid;
	tctx->counted_x = tctx->cgx;
	tctx->counted_w = p->scx.weight ? p->scx.weight : 100;
	cg_task_count(tctx->cgid, tctx->cgx, 1, tctx->counted_w, now);
}

static __always_inline void task_count_out(struct task_ctx *tctx, u64 now)
{
	if (tctx->counted_cgid) {
		cg_task_count(tctx->counted_cgid, tctx->counted_x, -1, tctx->counted_w, now);
		tctx->counted_cgid = 0;
		tctx->counted_x = 0;
	}
}

/*
 * @p becomes runnable (enqueue, or select_cpu's direct insert, which skips
 * enqueue): stamp a wakeup and count it against its cgroup's runnable tasks.
 * It stops counting when it sleeps (stopping, not runnable) or leaves. Per-CPU
 * kthreads run ahead of both DSQs, outside the shares, so they count in no
 * cgroup: a kworker waking would otherwise halve, for an instant, the share
 * of every top-level cgroup beside the root's own tasks.
 */
static __always_inline void task_arrives(struct task_struct *p, struct task_ctx *tctx, u64 now,
					 bool wakeup)
{
	if (wakeup)
		tctx->wake_at = now;
	if (!tctx->counted_cgid && tctx->cgid && !is_pcpu_kthread(p))
		task_count_in(tctx, p, now);
}

/* @tctx's task went on a latency-critical DSQ / left it (it runs, sleeps or exits). */
static __always_inline void lat_queued_in(struct task_ctx *tctx)
{
	if (!tctx->lat_queued) {
		tctx->lat_queued = 1;
		__sync_fetch_and_add(&nr_lat_queued, 1);
	}
}

static __always_inline void lat_queued_out(struct task_ctx *tctx)
{
	if (tctx->lat_queued) {
		tctx->lat_queued = 0;
		__sync_fetch_and_add(&nr_lat_queued, -1);
	}
}

/*
 * The cgroup's share of the machine, SLO_W_ONE = all of it (at least 1). Below
 * the root the fractions change only when a cgroup's activity does (hw_gen), so
 * their product is cached per cgroup; at the root, the children also compete
 * with the root's own tasks (kernel threads, daemons outside any slice), which
 * come and go on every wakeup, so that last fraction is taken live. A global
 * function: verified once. Safe in any context.
 */
__noinline u64 cg_hweight(struct cg_info *ci __arg_nonnull)
{
	struct cg_info *c, *pi, *root;
	u64 gen = hw_gen, hw = SLO_W_ONE, top_w = 0;
	s64 sum;
	u32 i;

	if (!ci->parent)
		return SLO_W_ONE;
	if (ci->hw_gen != gen || !ci->hw) {
		c = ci;
		bpf_for(i, 0, SLO_MAX_WALK) {
			u64 w = c->weight ? c->weight : 100;

			pi = cg_at(c->parent);
			if (!pi)
				break;
			if (!pi->parent) {	/* c is a child of the root */
				top_w = w;
				break;
			}
			/* a racing activation may not have reached child_w yet */
			sum = pi->child_w;
			if (sum < (s64)w)
				sum = w;
			hw = hw * w / (u64)sum;
			c = pi;
		}
		ci->hw = SLO_MAX(hw, 1ULL);
		ci->top_w = top_w;
		ci->hw_gen = gen;
	}
	hw = ci->hw;
	top_w = ci->top_w;
	root = cg_at(root_cgx);
	if (top_w && root) {
		sum = root->child_w + root->task_w;
		if (sum < (s64)top_w)
			sum = top_w;
		hw = hw * top_w / (u64)sum;
	}
	return SLO_MAX(hw, 1ULL);
}

/*
 * Entitlement of a latency-critical cgroup: it accrues run time at its share
 * of the machine (cg_hweight, SLO_W_ONE = one CPU, times the CPUs) and spends
 * every ns its tasks run, whether they were served first or by weight (so
 * that served by weight it can earn its way back, but no faster than its
 * share). At most ENTITLE_WINDOW_NS of share is banked. A cgroup alone
 * (share 1: no sibling active anywhere up the tree) owes nobody: its bank is
 * full, as at the start. Otherwise one that saturates the machine alone would
 * never pay off a debt from a moment's competition, since its share and its
 * use are then both every CPU. A global function: verified once. Safe in any
 * context.
 */
__noinline int lat_charge(struct cg_info *ci __arg_nonnull, u64 used, u64 now)
{
	u64 hw, rate, cap, last, dt, earned = 0;
	s64 tokens;

	hw = cg_hweight(ci);
	rate = hw * scx_bpf_nr_cpu_ids();
	cap = ENTITLE_WINDOW_NS * rate / SLO_W_ONE;
	last = ci->lat_refill_at;
	/* one CPU credits the time since the last refill; a racing one credits none */
	if (slo_time_before(last, now) && __sync_bool_compare_and_swap(&ci->lat_refill_at, last, now)) {
		dt = last ? now - last : ENTITLE_WINDOW_NS;
		earned = SLO_MIN(dt, ENTITLE_WINDOW_NS) * rate / SLO_W_ONE;
	}
	if (hw >= SLO_W_ONE) {
		ci->lat_tokens = cap;
		return 0;
	}
	tokens = __sync_add_and_fetch(&ci->lat_tokens, (s64)earned - (s64)used);
	if (tokens > (s64)cap)
		ci->lat_tokens = cap;
	return 0;
}

/*
 * Whether @p is served as latency-critical now: its class is, and its cgroup
 * has share left. Moving to batch service starts it at the present virtual
 * time (dsq_vtime held a deadline, a clock value). Callers hold @p off any DSQ.
 */
static __always_inline bool serve_lat(struct task_struct *p, struct task_ctx *tctx)
{
	struct cg_info *ci;
	bool over;

	if (!tctx->lat)
		return false;
	ci = cg_get(tctx->cgid, tctx->cgx);
	over = ci && ci->lat_refill_at && ci->lat_tokens <= 0;
	if (over && !tctx->over)
		p->scx.dsq_vtime = vtime_now;
	tctx->over = over;
	return !over;
}

#include "bw.bpf.h"

/*
 * Move the first task of @dsq this CPU may run to its local DSQ. With cpu.max
 * in use, tasks of throttled cgroups met on the way are parked instead.
 */
__noinline int take_from(u64 dsq, s32 cpu, u64 now)
{
	struct bpf_iter_scx_dsq it;
	struct task_struct *q;
	struct task_ctx *tctx;
	bool moved = false;
	int i;

	if (nr_bw_cgroups <= 0 || bw_timer_broken)
		return slo_dsq_move_to_local(dsq);
	if (!bpf_iter_scx_dsq_new(&it, dsq, 0)) {
		bpf_for(i, 0, BW_PICK_MAX) {
			q = bpf_iter_scx_dsq_next(&it);
			if (!q)
				break;
			tctx = bpf_task_storage_get(&slo_task_ctx, q, 0, 0);
			if (tctx && bw_must_wait(tctx, now) && bw_arm_timer()) {
				if (slo_dsq_move(&it, q, THROTTLE_DSQ, 0))
					bw_parked(tctx);
				continue;
			}
			if (q->migration_disabled || !bpf_cpumask_test_cpu(cpu, q->cpus_ptr))
				continue;
			moved = slo_dsq_move(&it, q, SCX_DSQ_LOCAL, 0);
			if (moved)
				break;
		}
	}
	bpf_iter_scx_dsq_destroy(&it);
	return moved || slo_dsq_move_to_local(dsq);
}

/*
 * HZ=100 ends a slice only at the next 10 ms tick. While latency-critical
 * tasks wait on a queue (no idle CPU, no preemptible one), a BPF timer every
 * slice_timer_ns (1 ms) preempts every CPU whose task has run past its
 * slice, so a queued latency-critical task waits for a slice, not a tick.
 */
__noinline int slice_kick_expired(u64 now)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	struct cpu_ctx *cc;
	s32 cpu;

	bpf_for(cpu, 0, SLO_MAX_CPUS) {
		if (cpu >= nr)
			break;
		cc = cpu_ctx_of(cpu);
		if (!cc || (cc->cur != CUR_LAT && cc->cur != CUR_BATCH))
			continue;
		if (slo_time_before(now, cc->slice_end))
			continue;
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		__sync_fetch_and_add(&nr_slice_kicks, 1);
	}
	return 0;
}

static int slice_timer_fn(void *map, int *key, struct bw_timer *t)
{
	slice_kick_expired(now_ns());
	slice_timer_armed = 0;
	if (nr_lat_queued > 0 && __sync_bool_compare_and_swap(&slice_timer_armed, 0, 1))
		bpf_timer_start(&t->timer, slice_timer_ns, 0);
	return 0;
}

static __always_inline long slice_timer_make(void)
{
	struct bw_timer *t;
	u32 zero = 0;
	long err;

	t = bpf_map_lookup_elem(&slo_slice_timer, &zero);
	if (!t)
		return -2;	/* -ENOENT */
	err = bpf_timer_init(&t->timer, &slo_slice_timer, CLOCK_MONOTONIC);
	if (err && err != -16)	/* -EBUSY: it exists */
		return err;
	return bpf_timer_set_callback(&t->timer, slice_timer_fn);
}

/* A latency-critical task now waits on a queue: make sure the slice timer runs. */
static __always_inline void slice_timer_arm(void)
{
	struct bw_timer *t;
	u32 zero = 0;

	if (!slice_timer_ns || slice_timer_broken ||
	    !__sync_bool_compare_and_swap(&slice_timer_armed, 0, 1))
		return;
	t = bpf_map_lookup_elem(&slo_slice_timer, &zero);
	if (!t || bpf_timer_start(&t->timer, slice_timer_ns, 0)) {
		slice_timer_broken = 1;
		slice_timer_armed = 0;
	}
}

/*
 * A CPU may be preempted for a latency-critical task due at @dl if it runs
 * batch work that is not the floor's, or (with @lat) latency-critical work
 * that has run lat_preempt_ns and would queue again (at now + its budget) no
 * earlier than @dl: a task that has had its turn yields to one that has
 * waited, as EEVDF's wakeup preemption does, and the minimum run keeps two
 * such tasks from preempting each other in a loop. No other waker may hold a
 * live claim on it. With @claim the claim is taken atomically (two wakers
 * never book one victim); it lapses after KICK_CLAIM_NS, and the victim drops
 * it when it dispatches or runs its next task, so a CPU that kept its task
 * after a kick is a victim again.
 */
static __always_inline bool victim_ok(struct cpu_ctx *cc, u64 now, u64 dl, bool lat, bool claim)
{
	u64 at;

	if (cc->cur == CUR_LAT) {
		if (!lat || !lat_preempt_ns || now - cc->run_since < lat_preempt_ns ||
		    slo_time_before(now + cc->cur_budget, dl))
			return false;
	} else if (cc->cur != CUR_BATCH || cc->floor_boost) {
		return false;
	}
	at = cc->kick_at;
	if (at && now - at < KICK_CLAIM_NS)
		return false;
	return !claim || __sync_bool_compare_and_swap(&cc->kick_at, at, now);
}

/* Whether @cpu (not @prefer, allowed to @p) may be preempted, as victim_ok(). */
static __always_inline bool victim_at(struct task_struct *p, s32 cpu, s32 prefer, u64 now,
				      u64 dl, bool claim)
{
	struct cpu_ctx *cc;

	if (cpu == prefer || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return false;
	cc = cpu_ctx_of(cpu);
	return cc && victim_ok(cc, now, dl, false, claim);
}

/*
 * A victim among at most VICTIM_PROBES CPUs of topo_order[first, end),
 * consecutive from a random one: the cost does not grow with the range, and
 * wakers spread over it instead of all trying its first CPU. -1: none.
 */
static __always_inline s32 victim_in(struct task_struct *p, u32 first, u32 end, s32 prefer,
				     u64 now, u64 dl, bool claim)
{
	u32 n, start, i, idx;
	s32 cpu;

	if (end <= first || end > SLO_MAX_CPUS)
		return -1;
	n = end - first;
	start = bpf_get_prandom_u32() % n;
	bpf_for(i, 0, VICTIM_PROBES) {
		if (i >= n)
			break;
		idx = first + (start + i) % n;
		if (idx >= SLO_MAX_CPUS)
			break;
		barrier_var(idx);
		cpu = topo_order[idx & (SLO_MAX_CPUS - 1)];
		if (victim_at(p, cpu, prefer, now, dl, claim))
			return cpu;
	}
	return -1;
}

/*
 * Pick (and with @claim, claim) a CPU to preempt for a latency-critical task
 * due at @dl, nearest first: @prefer (the task's CPU) if it runs batch work,
 * then its SMT sibling, then a sample of its LLC, of its NUMA node, of the
 * machine; last, @prefer if its latency-critical task has had its turn. Only
 * @prefer is taken from latency-critical work: elsewhere the slice timer
 * ends such runs once their slice is over.
 */
static s32 pick_victim(struct task_struct *p, s32 prefer, u64 dl, bool claim)
{
	u32 llc = llc_of(prefer), nf = node_first(llc), ne = node_end(llc);
	struct cpu_ctx *pc;
	u64 now = now_ns();
	s32 cpu;

	pc = cpu_ctx_of(prefer);
	if (pc && !bpf_cpumask_test_cpu(prefer, p->cpus_ptr))
		pc = NULL;
	if (pc && victim_ok(pc, now, dl, false, claim))
		return prefer;
	cpu = sibling_of(prefer);
	if (victim_at(p, cpu, prefer, now, dl, claim))
		return cpu;
	cpu = victim_in(p, llc_start(llc), llc_start(llc + 1), prefer, now, dl, claim);
	if (cpu < 0 && ne - nf > 1)
		cpu = victim_in(p, llc_start(nf), llc_start(ne), prefer, now, dl, claim);
	if (cpu < 0 && ne - nf < nr_llcs)
		cpu = victim_in(p, 0, llc_start(nr_llcs), prefer, now, dl, claim);
	if (cpu >= 0)
		return cpu;
	if (pc && victim_ok(pc, now, dl, true, claim)) {
		if (claim)
			__sync_fetch_and_add(&nr_lat_preempts, 1);
		return prefer;
	}
	return -1;
}

/* Count a preemption for a task woken on @from of @victim, by distance. */
static __always_inline void count_preempt(struct slo_class_stats *st, s32 from, s32 victim)
{
	u32 a = llc_of(from), b = llc_of(victim);

	st->nr_preempts++;
	if (a == b)
		st->nr_preempt_llc++;
	else if (same_node(a, b))
		st->nr_preempt_node++;
	else
		st->nr_preempt_far++;
}

/* select_cpu: an idle CPU is taken directly by any class. */
s32 BPF_STRUCT_OPS(slo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx;
	bool is_idle = false;
	s32 cpu, victim;

	if (is_canary(p))
		return prev_cpu;

	tctx = task_ctx_fresh(p);
	if (tctx)
		tctx->woke_from = prev_cpu;
	/* out of cpu.max quota: enqueue parks it, no CPU is claimed for it */
	if (tctx && tctx->bw_cgid[0] && bw_must_wait(tctx, now_ns()))
		return prev_cpu;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		struct slo_class_stats *st;

		if (tctx)
			task_arrives(p, tctx, now_ns(), true);
		slo_dsq_insert(p, SCX_DSQ_LOCAL, tctx ? tctx->slice_ns : slice_ns, 0);
		if (tctx && tctx->lat && (st = class_stats(tctx->class_id)))
			st->nr_direct++;
		return cpu;
	}
	if (tctx && serve_lat(p, tctx)) {
		/* enqueue then runs on the victim's runqueue and kicks it */
		victim = pick_victim(p, prev_cpu, now_ns() + tctx->budget_ns, false);
		if (victim >= 0)
			return victim;
	}
	return cpu;
}

/*
 * Virtual time for @used ns of CPU: used / effective weight, where the
 * effective weight is the task's cgroup's hierarchical share split among the
 * cgroup's runnable tasks by task weight, times the class weight (a task
 * alone in a cgroup with the whole machine is charged @used). A
 * latency-critical task over its cgroup's share competes by its share alone:
 * its class weight would give it more than its requests.
 */
static __always_inline u64 vtime_charge(struct task_struct *p, struct task_ctx *tctx, u64 used)
{
	u64 eff, hw = SLO_W_ONE, tw = 100, pw = p->scx.weight ? p->scx.weight : 100;
	u64 cw = tctx->over ? 100 : tctx->class_w;

	struct cg_info *ci = cg_get(tctx->counted_cgid, tctx->counted_x);

	if (ci) {
		hw = cg_hweight(ci);
		if (ci->task_w > 0) {
			tw = ci->task_w + SLO_MAX(ci->child_w, 0LL);
			pw = tctx->counted_w;
		}
	}
	/* x256 fixed point: a share of 1.0 at weight 100 is 100 * 256 */
	eff = (hw * 100 >> 8) * pw / tw * cw / 100;
	if (!eff)
		eff = 1;
	return used * 100 * 256 / eff;
}

/* Queue latency-critical @p by deadline on @cpu's LLC; the slice timer runs while any waits. */
static __always_inline void lat_queue(struct task_struct *p, struct task_ctx *tctx, s32 cpu,
				      u64 enq_flags)
{
	/* counted before it is inserted: a dispatch that reads 0 has nothing to miss */
	lat_queued_in(tctx);
	slo_dsq_insert_vtime(p, lat_dsq(llc_of(cpu)), tctx->slice_ns, tctx->deadline, enq_flags);
	slice_timer_arm();
}

/*
 * A latency-critical wakeup: an idle CPU (a fully idle core first), else a
 * victim by proximity; either way straight onto that CPU's local DSQ, ahead
 * of what it runs (SCX_ENQ_PREEMPT), so the CPU kicked runs the task it was
 * kicked for. With neither, by deadline on the LLC's queue. A re-queue (slice
 * expiry, preemption) happens on a CPU that is rescheduling: it queues.
 */
static __always_inline void enqueue_lat(struct task_struct *p, struct task_ctx *tctx,
					struct slo_class_stats *st, u64 now, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p), from = tctx->woke_from, to;

	tctx->deadline = (tctx->wake_at ? tctx->wake_at : now) + tctx->budget_ns;
	tctx->woke_from = -1;
	if (!(enq_flags & SCX_ENQ_WAKEUP)) {
		lat_queue(p, tctx, cpu, enq_flags);
		return;
	}
	/* without SMT the kernel's idle-core search already looks at every CPU */
	to = scx_bpf_pick_idle_cpu(p->cpus_ptr, SCX_PICK_IDLE_CORE);
	if (to < 0 && smt_on)
		to = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (to >= 0) {
		if (to != cpu && p->migration_disabled) {
			lat_queue(p, tctx, cpu, enq_flags);
			return;
		}
		slo_dsq_insert(p, to == cpu ? SCX_DSQ_LOCAL : SCX_DSQ_LOCAL_ON | to,
			       tctx->slice_ns, enq_flags);
		if (st)
			st->nr_direct++;
		return;
	}
	to = pick_victim(p, cpu, tctx->deadline, true);
	if (to < 0) {
		lat_queue(p, tctx, cpu, enq_flags);
		if (st)
			st->nr_fallbacks++;
		return;
	}
	if (st)
		count_preempt(st, from >= 0 ? from : cpu, to);
	if (to != cpu && p->migration_disabled) {
		lat_queue(p, tctx, to, enq_flags);
		scx_bpf_kick_cpu(to, SCX_KICK_PREEMPT);
		return;
	}
	slo_dsq_insert(p, to == cpu ? SCX_DSQ_LOCAL : SCX_DSQ_LOCAL_ON | to, tctx->slice_ns,
		       enq_flags | SCX_ENQ_PREEMPT);
}

/* enqueue: per-CPU kthreads local, latency-critical by deadline + preempt, rest by vtime. */
void BPF_STRUCT_OPS(slo_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct slo_class_stats *st;
	struct task_ctx *tctx;
	struct cpu_ctx *cc;
	u64 now = now_ns(), vtime, lag, resume_ns;
	s32 cpu;

#ifdef SCX_SLO_TEST_HOOKS
	if (is_canary(p)) {
		slo_dsq_insert(p, STALL_DSQ, slice_ns, enq_flags);
		return;
	}
#endif

	tctx = task_ctx_fresh(p);
	if (tctx)
		task_arrives(p, tctx, now, enq_flags & SCX_ENQ_WAKEUP);

	if (is_pcpu_kthread(p)) {
		cc = cpu_ctx_of(scx_bpf_task_cpu(p));
		if (cc && cc->cur == CUR_BATCH && !cc->floor_boost)
			enq_flags |= SCX_ENQ_PREEMPT;
		slo_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		if ((st = class_stats(tctx ? tctx->class_id : 0)))
			st->nr_kthread_local++;
		return;
	}

	if (!tctx) {
		slo_dsq_insert_vtime(p, batch_dsq(llc_of(scx_bpf_task_cpu(p))), slice_ns, vtime_now,
				     enq_flags);
		return;
	}
	tctx->enq_at = now;
	resume_ns = (enq_flags & SCX_ENQ_WAKEUP) ? 0 : tctx->resume_ns;
	tctx->resume_ns = 0;
	st = class_stats(tctx->class_id);
	if (st)
		st->nr_enqueues++;

	if (bw_must_wait(tctx, now)) {
		if (tctx->lat)
			tctx->deadline = (tctx->wake_at ? tctx->wake_at : now) + tctx->budget_ns;
		if (bw_park(p, tctx, enq_flags))
			return;
	}

	if (serve_lat(p, tctx)) {
		enqueue_lat(p, tctx, st, now, enq_flags);
		return;
	}
	if (tctx->over && st)
		st->nr_over_share++;

	/*
	 * Preempted with slice left (by a latency-critical task or a per-CPU
	 * kthread now on this CPU's local DSQ): resume right after it, as the
	 * kernel does for a task a higher class preempts, with what was left.
	 * It ran as this CPU's batch pick; re-queueing it would cost a dispatch
	 * for the same pick. Not while latency-critical work is queued: that
	 * goes first, through dispatch.
	 */
	if (resume_ns && nr_lat_queued <= 0 && scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL) > 0) {
		slo_dsq_insert(p, SCX_DSQ_LOCAL, resume_ns, enq_flags);
		tctx->resumed = 1;
		return;
	}

	/*
	 * Bound the lag a task may be owed, on every enqueue, to one slice of
	 * its own weight (what one slice's run would charge it): a wakeup brings
	 * back at most a slice of credit, and a preempted task keeps what it is
	 * owed up to that, however high its weight.
	 */
	vtime = p->scx.dsq_vtime;
	lag = vtime_charge(p, tctx, slice_ns);
	if (slo_time_before(vtime, vtime_now - lag))
		vtime = vtime_now - lag;
	slo_dsq_insert_vtime(p, batch_dsq(llc_of(scx_bpf_task_cpu(p))), tctx->slice_ns, vtime,
			     enq_flags);
	tctx->in_order = 1;

	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

/*
 * CPU time @p (running on @cc's CPU) has used since it was last accounted: its
 * execution time as the kernel counts it (sum_exec_runtime, which the core
 * updates before every callback that accounts here), without the interrupt
 * time a wall clock would charge it. The batch floor, shares and cpu.max then
 * measure what cgroup cpu.stat and the fair class measure.
 */
static __always_inline u64 run_since_mark(struct task_struct *p, struct cpu_ctx *cc)
{
	u64 exec = p->se.sum_exec_runtime;

	return exec > cc->exec_mark ? exec - cc->exec_mark : 0;
}

/*
 * Account the CPU time @p used since it started (or was last accounted) on
 * @cc: class run time, the CPU's latency-critical streak for the batch floor,
 * and the weighted vtime charge of non-critical tasks.
 */
static __always_inline void account_run(struct task_struct *p, struct task_ctx *tctx,
					struct cpu_ctx *cc, u64 now)
{
	struct slo_class_stats *st;
	u64 used = run_since_mark(p, cc);
	struct cg_info *ci;

	cc->exec_mark = p->se.sum_exec_runtime;
	if (tctx && tctx->lat && !tctx->over) {
		cc->floor_debt += used;
	} else if (!is_pcpu_kthread(p) && batch_floor_pct && batch_floor_pct < 100) {
		/* batch time pays the debt back at (100 - floor) / floor */
		u64 paid = used * (100 - batch_floor_pct) / batch_floor_pct;

		cc->floor_debt = cc->floor_debt > paid ? cc->floor_debt - paid : 0;
	}
	if (!tctx)
		return;
	if ((st = class_stats(tctx->class_id)))
		st->run_ns += used;
	if (!tctx->lat || tctx->over)
		p->scx.dsq_vtime += vtime_charge(p, tctx, used);
	if (tctx->lat && (ci = cg_get(tctx->cgid, tctx->cgx)))
		lat_charge(ci, used, now);
	if (tctx->bw_cgid[0])
		bw_account(tctx, used, now);
}

/*
 * vtime of the first task on @dsq; false if it is empty. scx_bpf_dsq_peek()
 * (6.19) reads the head without an iterator; older kernels open one.
 */
static __always_inline bool head_vtime(u64 dsq, u64 *vtime)
{
	struct bpf_iter_scx_dsq it;
	struct task_struct *q;
	bool found = false;

	if (bpf_ksym_exists(scx_bpf_dsq_peek)) {
		q = scx_bpf_dsq_peek(dsq);
		if (q)
			*vtime = q->scx.dsq_vtime;
		return q != NULL;
	}
	if (!bpf_iter_scx_dsq_new(&it, dsq, 0)) {
		q = bpf_iter_scx_dsq_next(&it);
		if (q) {
			*vtime = q->scx.dsq_vtime;
			found = true;
		}
	}
	bpf_iter_scx_dsq_destroy(&it);
	return found;
}

/*
 * dispatch runs while @prev is still current and not yet re-queued, so
 * decide here whether @prev (slice used up, still runnable) should go on:
 * neither goes on while latency-critical tasks are queued anywhere; a batch
 * prev goes on while its vtime (with the pending charge) stays below the
 * head of its LLC's batch queue @bq.
 */
static __always_inline bool keep_prev(struct task_struct *prev, struct cpu_ctx *cc, u64 bq,
				      u64 now)
{
	struct task_ctx *tctx;
	bool charged, lat;
	u64 head;

	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED) || is_canary(prev))
		return false;
	tctx = task_ctx_fresh(prev);
	if (!tctx)
		return false;
	/* charge the run so far first: out of quota, prev is parked on re-queue */
	charged = tctx->bw_cgid[0];
	if (charged) {
		account_run(prev, tctx, cc, now);
		if (bw_must_wait(tctx, now))
			return false;
	}
	if (nr_lat_queued > 0)
		return false;
	lat = serve_lat(prev, tctx);
	if (!lat && head_vtime(bq, &head) &&
	    !slo_time_before(prev->scx.dsq_vtime + vtime_charge(prev, tctx, run_since_mark(prev, cc)),
			     head))
		return false;
	/* prev goes on without stopping/running: account its run so far here */
	if (!lat && slo_time_before(vtime_now, prev->scx.dsq_vtime))
		vtime_now = prev->scx.dsq_vtime;
	if (!charged)
		account_run(prev, tctx, cc, now);
	prev->scx.slice = tctx->slice_ns;
	cc->slice_end = now + tctx->slice_ns;
	return true;
}

/*
 * Starvation scan: every task of the last STARVE_SCAN_MAX of the batch queue
 * @bq that waited over timeout_ms/4 goes to this CPU's local DSQ with a short slice
 * (at most STARVE_RESCUE_MAX a scan). Rescuing all of them, not one, keeps the
 * bound for any number of starving tasks: N of them cost N short slices.
 */
__noinline int rescue_starved(s32 cpu, u64 bq, u64 now)
{
	struct task_struct *q;
	struct task_ctx *tctx;
	u64 limit = (u64)timeout_ms * 1000 * 1000 / 4;
	struct bpf_iter_scx_dsq it;
	int i, moved = 0;

	if (bpf_iter_scx_dsq_new(&it, bq, SCX_DSQ_ITER_REV)) {
		bpf_iter_scx_dsq_destroy(&it);
		return false;
	}
	bpf_for(i, 0, STARVE_SCAN_MAX) {
		q = bpf_iter_scx_dsq_next(&it);
		if (!q)
			break;
		tctx = bpf_task_storage_get(&slo_task_ctx, q, 0, 0);
		if (!tctx || now - tctx->enq_at < limit)
			continue;
		/* moving a task this CPU may not run is a scheduler error */
		if (q->migration_disabled || !bpf_cpumask_test_cpu(cpu, q->cpus_ptr))
			continue;
		slo_dsq_move_set_slice(&it, lat_slice_ns);
		if (slo_dsq_move(&it, q, SCX_DSQ_LOCAL, 0)) {
			struct slo_class_stats *st = class_stats(tctx->class_id);

			tctx->in_order = 0;

			if (st)
				st->nr_starve_rescues++;
			rescue_pid = q->pid;
			rescue_wait_ns = now - tctx->enq_at;
			rescue_vtime_lead = (s64)(q->scx.dsq_vtime - vtime_now);
			if (++moved >= STARVE_RESCUE_MAX)
				break;
		}
	}
	bpf_iter_scx_dsq_destroy(&it);
	return moved;
}

/*
 * Take a task from the nearest other LLC whose queue @base + LLC has one (its
 * node's LLCs first), so that a CPU with empty queues does not idle while
 * work waits elsewhere. A global function: verified once.
 */
__noinline int steal_from(u64 base, s32 cpu, u64 now)
{
	u32 llc = llc_of(cpu), k, l;

	bpf_for(k, 1, SLO_MAX_LLCS) {
		if (k >= nr_llcs)
			break;
		l = llc_near(llc, k);
		if (scx_bpf_dsq_nr_queued(base + l) > 0 && take_from(base + l, cpu, now))
			return 1;
	}
	return 0;
}

/*
 * Idle CPUs steal; busy ones even out here, every STARVE_SCAN_NS: take the
 * head of the nearest LLC's batch queue that is a round longer than this
 * LLC's (one queued task per CPU more), so tasks queued near busier CPUs do
 * not wait longer for ever. A global function: verified once.
 */
__noinline int balance_batch(s32 cpu, u64 now)
{
	u32 llc = llc_of(cpu), k, l;
	s64 mine, theirs, mine_cpus, their_cpus;

	if (llc >= SLO_MAX_LLCS)
		return 0;
	mine = scx_bpf_dsq_nr_queued(batch_dsq(llc));
	mine_cpus = llc_start(llc + 1) - llc_start(llc);
	bpf_for(k, 1, SLO_MAX_LLCS) {
		if (k >= nr_llcs)
			break;
		l = llc_near(llc, k);
		if (l >= SLO_MAX_LLCS)
			break;
		their_cpus = llc_start(l + 1) - llc_start(l);
		theirs = scx_bpf_dsq_nr_queued(batch_dsq(l));
		/* theirs / their_cpus > mine / mine_cpus + 1 */
		if (theirs * mine_cpus > (mine + mine_cpus) * their_cpus &&
		    take_from(batch_dsq(l), cpu, now))
			return 1;
	}
	return 0;
}

/*
 * dispatch: starvation rescue and balance, batch floor, prev if it still
 * leads, then latency-critical work (this LLC's, the nearest other's), then
 * batch (the same way).
 */
void BPF_STRUCT_OPS(slo_dispatch, s32 cpu, struct task_struct *prev)
{
	struct cpu_ctx *cc = cpu_ctx_of(cpu);
	struct slo_class_stats *st;	/* class 0's, looked up only to count */
	u32 llc = llc_of(cpu);
	u64 now = now_ns(), bq = batch_dsq(llc);
	s32 nr_batch = scx_bpf_dsq_nr_queued(bq);

	if (!cc) {
		if (!slo_dsq_move_to_local(lat_dsq(llc)))
			slo_dsq_move_to_local(bq);
		return;
	}
	/* this CPU is rescheduling: a kick that claimed it has landed */
	cc->kick_at = 0;

	if (nr_lingering > 0 && !slo_time_before(now, linger_check_at)) {
		linger_check_at = now + LINGER_NS / 4;
		cg_release_due(now);
	}

	/* no cpu.max timer: try to make one again, at most every 100 ms */
	if (bw_timer_broken && nr_bw_cgroups > 0 && now - bw_last_make > STARVE_SCAN_NS) {
		bw_last_make = now;
		if (!bw_timer_make())
			bw_timer_broken = 0;
	}

	if (now - cc->last_scan > STARVE_SCAN_NS) {
		cc->last_scan = now;
		if (nr_batch > 0 && rescue_starved(cpu, bq, now))
			return;
		if (nr_llcs > 1 && balance_batch(cpu, now)) {
			if ((st = class_stats(0)))
				st->nr_balances++;
			return;
		}
	}
	if (nr_batch <= 0) {
		cc->floor_debt = 0;
	} else if (batch_floor_pct && batch_floor_pct < 100 &&
		   cc->floor_debt * batch_floor_pct >= (u64)(100 - batch_floor_pct) * slice_ns) {
		if (take_from(bq, cpu, now)) {
			cc->boost_next = 1;
			if ((st = class_stats(0)))
				st->nr_floor_boosts++;
			return;
		}
	}

	if (keep_prev(prev, cc, bq, now))
		return;
	if (nr_lat_queued > 0 && take_from(lat_dsq(llc), cpu, now))
		return;
	if (nr_lat_queued > 0 && nr_llcs > 1 && steal_from(LAT_DSQ_BASE, cpu, now)) {
		if ((st = class_stats(0)))
			st->nr_steals++;
		return;
	}
	if (take_from(bq, cpu, now))
		return;
	if (nr_llcs > 1 && steal_from(BATCH_DSQ_BASE, cpu, now)) {
		if ((st = class_stats(0)))
			st->nr_steals++;
		return;
	}
	/* parked tasks need the timer; without one they run anyway */
	if (!bw_timer_armed && scx_bpf_dsq_nr_queued(THROTTLE_DSQ) > 0 && !bw_arm_timer())
		slo_dsq_move_to_local(THROTTLE_DSQ);
}

/* A miss into slo_misses, within its cgroup's rate; false: not recorded. */
static bool record_miss(struct task_struct *p, struct task_ctx *tctx, u64 delay, u64 now)
{
	struct cg_info *ci = cg_get(tctx->cgid, tctx->cgx);
	struct slo_miss *m;

	if (!ci)
		return false;
	if (now - ci->miss_window >= MISS_WINDOW_NS) {
		ci->miss_window = now;
		ci->miss_records = 0;
	}
	if (__sync_fetch_and_add(&ci->miss_records, 1) >= MISS_RECORDS)
		return false;
	m = bpf_ringbuf_reserve(&slo_misses, sizeof(*m), 0);
	if (!m)
		return false;
	m->cgid = tctx->cgid;
	m->delay_ns = delay;
	m->at_ns = now;
	m->pid = p->pid;
	m->cpu = bpf_get_smp_processor_id();
	m->class_id = tctx->class_id;
	m->pad = 0;
	bpf_ringbuf_submit(m, 0);
	return true;
}

/* running: record wakeup-to-run latency and what this CPU now runs. */
void BPF_STRUCT_OPS(slo_running, struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);
	struct cpu_ctx *cc = cpu_ctx_of(scx_bpf_task_cpu(p));
	u64 now = now_ns();

	if (cc) {
		cc->exec_mark = p->se.sum_exec_runtime;
		cc->run_since = now;
		cc->slice_end = now + p->scx.slice;
		cc->kick_at = 0;
		if (is_pcpu_kthread(p))
			cc->cur = CUR_KTHREAD;
		else
			cc->cur = (tctx && tctx->lat && !tctx->over) ? CUR_LAT : CUR_BATCH;
		cc->cur_budget = tctx ? tctx->budget_ns : 0;
		/* dispatch runs before prev's stopping(), so the grant lands here */
		cc->floor_boost = cc->boost_next && cc->cur == CUR_BATCH;
		cc->boost_next = 0;
	}
	if (!tctx)
		return;
	lat_queued_out(tctx);
	/* latency-critical work was queued while it waited to resume: let dispatch serve it */
	if (tctx->resumed) {
		tctx->resumed = 0;
		if (nr_lat_queued > 0)
			scx_bpf_kick_cpu(scx_bpf_task_cpu(p), SCX_KICK_PREEMPT);
	}

	if (tctx->in_order && slo_time_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
	tctx->in_order = 0;

	if (tctx->wake_at) {
		struct slo_class_stats *st = class_stats(tctx->class_id);
		u64 lat = now - tctx->wake_at;

		tctx->wake_at = 0;
		if (st) {
			u32 b = slo_log2_u64(lat);

			if (b >= SLO_HIST_BUCKETS)
				b = SLO_HIST_BUCKETS - 1;
			st->lat_hist[b]++;
			st->nr_wakeups++;
			if (lat > tctx->miss_ns) {
				st->nr_misses++;
				/* batch has no SLO: only latency-critical misses are records */
				if (tctx->lat && !record_miss(p, tctx, lat, now))
					st->nr_miss_drops++;
			}
		}
	}
}

/* stopping: account the run (vtime charge, class time, floor streak). */
void BPF_STRUCT_OPS(slo_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);
	struct cpu_ctx *cc = cpu_ctx_of(scx_bpf_task_cpu(p));
	u64 now = now_ns();

	if (!cc)
		return;
	account_run(p, tctx, cc, now);
	if (tctx && !runnable) {
		task_count_out(tctx, now);
		lat_queued_out(tctx);
	}
	/* cut short by SCX_ENQ_PREEMPT or a kick (they zero the slice) */
	if (tctx && runnable && !p->scx.slice && cc->cur == CUR_BATCH &&
	    slo_time_before(now, cc->slice_end))
		tctx->resume_ns = cc->slice_end - now;
	cc->cur = CUR_IDLE;
	cc->floor_boost = 0;
}

/*
 * tick: charge a running task of a limited cgroup; out of quota, it stops now.
 * With no cpu.max quota anywhere there is nothing to charge.
 */
void BPF_STRUCT_OPS(slo_tick, struct task_struct *p)
{
	struct task_ctx *tctx;
	struct cpu_ctx *cc;
	u64 now;

	if (nr_bw_cgroups <= 0)
		return;
	tctx = task_ctx_fresh(p);
	if (!tctx || !tctx->bw_cgid[0])
		return;
	cc = cpu_ctx_of(scx_bpf_task_cpu(p));
	if (!cc)
		return;
	now = now_ns();
	account_run(p, tctx, cc, now);
	if (bw_must_wait(tctx, now))
		p->scx.slice = 0;
}

/* disable: the task leaves sched_ext (another class, or exit): it counts nowhere. */
void BPF_STRUCT_OPS(slo_disable, struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);

	if (tctx) {
		task_count_out(tctx, now_ns());
		lat_queued_out(tctx);
	}
}

/* enable: new tasks start at the current virtual time. */
void BPF_STRUCT_OPS(slo_enable, struct task_struct *p)
{
	p->scx.dsq_vtime = vtime_now;
}

/* init_task: allocate the task context, note its cgroup; its class resolves on first use. */
s32 BPF_STRUCT_OPS(slo_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -12;	/* -ENOMEM */
	tctx->gen = ~0ULL;
	tctx->woke_from = -1;
	if (args->cgroup) {
		tctx->cgid = args->cgroup->kn->id;
		tctx->cgx = cg_slot_of(tctx->cgid);
	}
	return 0;
}

/* exit_task: drop the task's runnable count if it still holds one. */
void BPF_STRUCT_OPS(slo_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	struct task_ctx *tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);

	if (tctx) {
		task_count_out(tctx, now_ns());
		lat_queued_out(tctx);
	}
}

/*
 * A slot for cgroup @id (its own if it has one), reset to cpu.weight 100;
 * NULL if every slot is taken (the cgroup then counts in no share).
 */
static __always_inline struct cg_info *cg_new(u64 id)
{
	u32 x = cg_slot_of(id), k;
	struct cg_info *ci = cg_at(x);

	if (!ci || ci->id != id) {
		if (bpf_map_pop_elem(&slo_cg_free, &k)) {
			__sync_fetch_and_add(&nr_cg_full, 1);
			return NULL;
		}
		x = k + 1;
		ci = cg_at(x);
		if (!ci || bpf_map_update_elem(&slo_cg_slot, &id, &x, BPF_ANY)) {
			bpf_map_push_elem(&slo_cg_free, &k, 0);
			__sync_fetch_and_add(&nr_cg_full, 1);
			return NULL;
		}
	}
	__builtin_memset(ci, 0, sizeof(*ci));
	ci->id = id;
	ci->weight = 100;
	return ci;
}

/* cgroup_init: a slot with the cgroup's parent, cpu.weight and (>= 6.17) cpu.max. */
s32 BPF_STRUCT_OPS(slo_cgroup_init, struct cgroup *cgrp, struct scx_cgroup_init_args *args)
{
	u64 id = cgrp->kn->id;
	struct cg_info *ci = cg_new(id);

	__sync_fetch_and_add(&weight_gen, 1);
	if (!ci)
		return 0;
	if (args->weight)
		ci->weight = args->weight;
	if (!cgrp->level) {
		root_cgid = id;
		root_cgx = cg_slot_of(id);
	} else {
		struct cgroup *parent = bpf_cgroup_ancestor(cgrp, cgrp->level - 1);

		if (parent) {
			ci->parent = cg_slot_of(parent->kn->id);
			bpf_cgroup_release(parent);
		}
	}
	if (bpf_core_field_exists(args->bw_quota_us))
		cg_set_bw(ci, args->bw_period_us, args->bw_quota_us, args->bw_burst_us);
	return 0;
}

/*
 * cgroup_exit: give its slot back (a lingering one first stops counting as
 * its parent's active child).
 */
void BPF_STRUCT_OPS(slo_cgroup_exit, struct cgroup *cgrp)
{
	u64 id = cgrp->kn->id;
	u32 x = cg_slot_of(id), k = x - 1;
	struct cg_info *ci = cg_get(id, x);

	if (!ci)
		return;
	if (ci->quota_ns)
		__sync_fetch_and_add(&nr_bw_cgroups, -1);
	if (ci->nr_active == 1)
		cg_drop_hold(ci);
	ci->id = 0;
	bpf_map_delete_elem(&slo_cg_slot, &id);
	bpf_map_push_elem(&slo_cg_free, &k, 0);
}

/* cgroup_set_weight: new cpu.weight; an active cgroup's parent's child_w follows. */
void BPF_STRUCT_OPS(slo_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	u64 id = cgrp->kn->id;
	struct cg_info *ci = cg_get(id, 0), *pi;

	if (ci) {
		ci->weight = weight;
		if (ci->nr_active > 0 && (pi = cg_at(ci->parent))) {
			__sync_fetch_and_add(&pi->child_w, (s64)weight - (s64)ci->active_w);
			ci->active_w = weight;
		}
		__sync_fetch_and_add(&hw_gen, 1);
	} else if ((ci = cg_new(id))) {
		ci->weight = weight;
	}
	__sync_fetch_and_add(&weight_gen, 1);
}

/* cgroup_set_bandwidth (>= 6.17): new cpu.max; every task re-resolves its limits. */
void BPF_STRUCT_OPS(slo_cgroup_set_bandwidth, struct cgroup *cgrp, u64 period_us, u64 quota_us,
		    u64 burst_us)
{
	u64 id = cgrp->kn->id;
	struct cg_info *ci = cg_get(id, 0);

	if (!ci)
		ci = cg_new(id);
	if (!ci)
		return;
	cg_set_bw(ci, period_us, quota_us, burst_us);
	__sync_fetch_and_add(&weight_gen, 1);
}

/* cgroup_move: the task re-resolves its class; its runnable count follows it. */
void BPF_STRUCT_OPS(slo_cgroup_move, struct task_struct *p, struct cgroup *from, struct cgroup *to)
{
	struct task_ctx *tctx = bpf_task_storage_get(&slo_task_ctx, p, 0, 0);
	u64 now = now_ns();

	if (!tctx)
		return;
	tctx->gen = ~0ULL;
	tctx->cgid = to->kn->id;
	tctx->cgx = cg_slot_of(tctx->cgid);
	if (tctx->counted_cgid) {
		task_count_out(tctx, now);
		task_count_in(tctx, p, now);
	}
}

/* init: create the dispatch queues and the timers. */
s32 BPF_STRUCT_OPS_SLEEPABLE(slo_init)
{
	s32 ret, cpu;
	u32 l;

	bpf_for(l, 0, SLO_MAX_CGROUPS) {
		if (bpf_map_push_elem(&slo_cg_free, &l, 0))
			break;
	}
	if (bw_timer_make())
		bw_timer_broken = 1;
	if (slice_timer_make())
		slice_timer_broken = 1;
	ret = scx_bpf_create_dsq(THROTTLE_DSQ, -1);
	if (ret)
		return ret;

#ifdef SCX_SLO_TEST_HOOKS
	ret = scx_bpf_create_dsq(STALL_DSQ, -1);
	if (ret)
		return ret;
#endif
	if (!nr_llcs || nr_llcs > SLO_MAX_LLCS || llc_start(nr_llcs) < scx_bpf_nr_cpu_ids()) {
		scx_bpf_error("CPU topology not set for %u CPUs (the loader sets it)",
			      scx_bpf_nr_cpu_ids());
		return -22;	/* -EINVAL */
	}
	bpf_for(cpu, 0, SLO_MAX_CPUS) {
		if (cpu >= scx_bpf_nr_cpu_ids())
			break;
		if (sibling_of(cpu) != cpu) {
			smt_on = 1;
			break;
		}
	}
	bpf_for(l, 0, SLO_MAX_LLCS) {
		if (l >= nr_llcs)
			break;
		ret = scx_bpf_create_dsq(lat_dsq(l), -1);
		if (!ret)
			ret = scx_bpf_create_dsq(batch_dsq(l), -1);
		if (ret)
			return ret;
	}
	return 0;
}

/* exit: copy the kernel's exit info where user space can read it. */
void BPF_STRUCT_OPS(slo_exit_op, struct scx_exit_info *ei)
{
	u32 zero = 0;
	struct slo_exit_info *out = bpf_map_lookup_elem(&slo_exit, &zero);

	if (!out)
		return;
	out->kind = ei->kind;
	out->exit_code = ei->exit_code;
	bpf_probe_read_kernel_str(out->reason, sizeof(out->reason), ei->reason);
	bpf_probe_read_kernel_str(out->msg, sizeof(out->msg), ei->msg);
}

SEC(".struct_ops.link")
struct sched_ext_ops scx_slo_ops = {
	.select_cpu		= (void *)slo_select_cpu,
	.enqueue		= (void *)slo_enqueue,
	.dispatch		= (void *)slo_dispatch,
	.running		= (void *)slo_running,
	.stopping		= (void *)slo_stopping,
	.tick			= (void *)slo_tick,
	.disable		= (void *)slo_disable,
	.enable			= (void *)slo_enable,
	.init_task		= (void *)slo_init_task,
	.exit_task		= (void *)slo_exit_task,
	.cgroup_init		= (void *)slo_cgroup_init,
	.cgroup_exit		= (void *)slo_cgroup_exit,
	.cgroup_set_weight	= (void *)slo_cgroup_set_weight,
	.cgroup_set_bandwidth	= (void *)slo_cgroup_set_bandwidth,
	.cgroup_move		= (void *)slo_cgroup_move,
	.init			= (void *)slo_init,
	.exit			= (void *)slo_exit_op,
	.flags			= 0,
	.timeout_ms		= 5000,
	.name			= "scx_slo",
};
