"""Loading a scheduler: the ELF/BTF gate (btf, gate, kfuncs), the loader and its
contract with the BPF object (scheduler), pins on bpffs (pins), settings to tunables
(tuning), the kernel's sched_ext state in sysfs (sysfs) and the cffi binding to libbpf
(libbpf). Imports nothing from scx_slo.agent or scx_slo.dev."""
